"""Run directories written exactly to the DESIGN.md §4 contract, with controllable numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

LAYERS = 6


def _scan(values: list[float], model: str = "tiny", fmt: str = "mxfp4") -> dict:
    return {"schema": "srdd.scan/v1", "model": {"name": model, "num_layers": len(values)}, "format": {"name": fmt},
            "layers": [{"layer": i, "block_output": {"relative_error": v, "deadzone_ratio": v / 2,
                                                     "sqnr_db": 20 - 10 * v}} for i, v in enumerate(values)]}


def write_run(root: Path, name: str, *, seed: int, acc: list[float], noise: dict | None = None,
              pre: list[float] | None = None, post_shift: list[float] | None = None, status: str = "complete",
              quant: str = "mxfp4/w4a4", model: str = "tiny", sigma_layers: dict | None = None,
              sigma_layers_effective: dict | None = None, merged: float | None | str = "same") -> Path:
    """`merged`: the final step's merged-LoRA accuracy ("same" = the separate one, None = not evaluated)."""
    path = root / name
    path.mkdir(parents=True)
    noise = {"enabled": True, "schedule": "exponential", "sigma_start": 0.05, "sigma_end": 0.0005, "num_stages": 10,
             "targets": ["linear"], "target_layers": None, "layer_multipliers": None, "zone_overrides": [],
             **(noise or {})}
    config = {"model": model, "seed": seed, "quant": {"format": "mxfp4", "mode": "w4a4"}, "noise": noise,
              "grpo": {"steps": 20}}
    (path / "run.json").write_text(json.dumps({"schema": "srdd.run/v1", "name": name, "status": status,
                                               "reason": None, "config": config, "versions": {},
                                               "started": "2026-11-23T00:00:00+00:00", "finished": None}))
    steps = [0, 10, 20][: len(acc)]
    lines = []
    for step, a in zip(steps, acc):
        lines.append({"step": step, "sigma": 0.01, "reward_mean": a, "accuracy": a, "eval_quant": quant,
                      "eval_lora": "separate", "sigma_layers": sigma_layers,
                      "sigma_layers_effective": sigma_layers_effective})
    if merged is not None:
        lines[-1]["eval_merged"] = {"accuracy": acc[-1] if merged == "same" else merged, "eval_quant": quant,
                                    "eval_lora": "merged", "eval_samples": 64}
    (path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    pre = pre or [0.30 + 0.01 * i for i in range(LAYERS)]
    post = [p + s for p, s in zip(pre, post_shift or [0.0] * LAYERS)]
    (path / "scan_before.json").write_text(json.dumps(_scan(pre, model)))
    (path / "scan_after.json").write_text(json.dumps(_scan(post, model)))
    return path


@pytest.fixture
def study(tmp_path) -> Path:
    """Baseline, variable, targeted and constant groups, three seeds each, with distinct outcomes."""
    root = tmp_path / "runs"
    mults = {i: 0.5 + 0.2 * i for i in range(LAYERS)}
    for s in range(3):
        write_run(root, f"E13i-baseline-s{s}", seed=s, acc=[0.40, 0.50, 0.56 + 0.005 * s],
                  post_shift=[-0.01 * (i % 3) - 0.001 * s for i in range(LAYERS)],
                  sigma_layers={str(i): 0.01 for i in range(LAYERS)})
        write_run(root, f"E13j-variable-s{s}", seed=s, acc=[0.40, 0.55, 0.60 + 0.004 * s],
                  noise={"layer_multipliers": mults},
                  post_shift=[-0.02 * i / LAYERS - 0.002 * s for i in range(LAYERS)],
                  sigma_layers={str(i): 0.01 * m for i, m in mults.items()})
        write_run(root, f"E13i-targeted-s{s}", seed=s, acc=[0.40, 0.52, 0.565 + 0.01 * s],
                  noise={"target_layers": [2, 3]}, post_shift=[0.001 * i * s for i in range(LAYERS)])
        write_run(root, f"E13k-constant-s{s}", seed=s, acc=[0.40, 0.45, 0.50 + 0.003 * s],
                  noise={"schedule": "constant", "sigma_start": 0.03, "sigma_end": 0.03, "num_stages": 1,
                         "targets": ["rmsnorm"]}, post_shift=[0.003 * s] * LAYERS)
    write_run(root, "broken", seed=0, acc=[0.4, 0.9], status="failed")
    return root
