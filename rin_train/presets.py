"""Ready-made runs (the lowest layer of a config: a CONFIG file and --set override them).

- `smoke`: a tiny random Llama (3 layers, word-level tokenizer built locally by
  srdd.tiny, no download), 3 GRPO steps, noise on RMSNorm and linear weights,
  validations at steps 0, 2 and 3, both rescans. Seconds; what the tests run.
- `demo`: the embedded SmolLM2-135M-Instruct under MXFP4 W4A4 with decaying noise,
  a few dozen GRPO steps on the built-in word problems, validations at steps 0, 12
  and 24, rescans before and after. Minutes on a laptop CPU. The training reward
  gives 0.1 for a well-formed wrong '#### n' answer so groups are rarely all equal.
"""

from __future__ import annotations

import copy

from srdd.errors import SrddError

PRESETS: dict[str, dict] = {
    "smoke": {
        "model": "tiny",
        "task": {"train_size": 32, "test_size": 8},
        "quant": {"format": "mxfp4", "mode": "w4a4"},
        "lora": {"r": 4, "alpha": 8},
        "grpo": {"steps": 3, "num_generations": 2, "batch_size": 4, "max_prompt_length": 128,
                 "max_completion_length": 8, "learning_rate": 1.0e-3, "save_every": 2, "stall_timeout_s": 300.0},
        "eval": {"every": 2, "samples": 8, "max_new_tokens": 8},
        "noise": {"targets": ["rmsnorm", "linear"], "sigma_start": 0.05, "sigma_end": 0.01, "num_stages": 3},
        "scan": {"samples": 2, "max_tokens": 16},
    },
    "demo": {
        "model": "smollm2",
        "task": {"train_size": 256, "test_size": 24, "format_score": 0.1},
        "quant": {"format": "mxfp4", "mode": "w4a4"},
        "lora": {"r": 16, "alpha": 32},
        "grpo": {"steps": 24, "num_generations": 4, "batch_size": 8, "max_prompt_length": 192,
                 "max_completion_length": 32, "learning_rate": 1.0e-4, "save_every": 6, "stall_timeout_s": 900.0},
        "eval": {"every": 12, "samples": 24, "max_new_tokens": 32, "batch_size": 24},
        "noise": {"targets": ["linear"], "sigma_start": 0.05, "sigma_end": 0.005, "num_stages": 4},
        "scan": {"samples": 4, "max_tokens": 64},
    },
}


def preset(name: str | None) -> dict:
    if name is None:
        return {}
    if name not in PRESETS:
        raise SrddError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
