"""Ready-made runs: `smoke` (tiny random model, seconds) and `demo` (SmolLM2, minutes on a laptop CPU)."""

from __future__ import annotations

from srdd.errors import SrddError

PRESETS: dict[str, dict] = {
    "smoke": {
        "model": "tiny", "seed": 0,
        "task": {"train_size": 32, "test_size": 8},
        "lora": {"r": 4, "alpha": 8},
        "grpo": {"steps": 3, "num_generations": 2, "batch_size": 4, "max_completion_length": 8,
                 "learning_rate": 1e-3, "save_every": 2, "stall_timeout_s": 600},
        "eval": {"every": 2, "samples": 8, "max_new_tokens": 8},
        "noise": {"targets": ["rmsnorm", "linear"], "sigma_start": 0.05, "sigma_end": 0.01, "num_stages": 3},
        "scan": {"samples": 2, "max_tokens": 16},
    },
    "demo": {
        "model": "smollm2", "seed": 0,
        "task": {"train_size": 256, "test_size": 32},
        "lora": {"r": 16, "alpha": 32},
        "grpo": {"steps": 20, "num_generations": 4, "batch_size": 8, "max_completion_length": 48,
                 "learning_rate": 5e-5, "save_every": 5},
        "eval": {"every": 10, "samples": 32, "max_new_tokens": 64},
        "noise": {"targets": ["rmsnorm"], "sigma_mode": "absolute", "sigma_start": 0.01, "sigma_end": 0.0005,
                  "num_stages": 4},
        "scan": {"samples": 4, "max_tokens": 96},
    },
}


def preset(name: str | None) -> dict:
    if name is None:
        return {}
    if name not in PRESETS:
        raise SrddError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]
