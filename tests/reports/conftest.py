"""Run directories written exactly to the DESIGN.md §4 contract, with controllable numbers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
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


PILOT_ARMS = {"E13i-baseline": {}, "E13i-targeted": {"target_layers": [2, 3]},
              "E13j-variable": {"layer_multipliers": {0: 1.2, 1: 0.8}}, "E13m-rmsnorm": {"targets": ["rmsnorm"]},
              "control": {"enabled": False}}
"""Each arm's noise as the suite's (control: the baseline with noise off), so each hypothesis is unconfounded."""


def write_pilot(root: Path, arms: Sequence[str] = ("E13i-baseline", "E13i-targeted", "E13j-variable"), *,
                outcomes: bool = False, flip: float = 0.15, step_s: float = 12.0, seed: int = 0) -> Path:
    """A pilot for `srdd study plan`: `arms` x four seeds, 64 test problems, 20 steps of about `step_s` seconds,
    0.25 s per evaluated problem and 100 s per run besides (run.json's wall_time_s), each run's correctness
    `flip` away from a shared answer sheet; with `outcomes`, the per-problem outcomes of its final evaluations."""
    rng = np.random.default_rng(seed)
    m = 64
    base = rng.random(m) < 0.4
    for arm in arms:
        for s in range(4):
            correct = base ^ (rng.random(m) < flip)
            acc = float(correct.mean())
            path = write_run(root, f"{arm}-s{s}", seed=s, acc=[0.3, acc, acc], noise=PILOT_ARMS[arm])
            lines = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
            for line in lines:
                line["eval_samples"] = m
                if line["step"]:
                    line["step_s"] = step_s + 0.25 * m * (2 if "eval_merged" in line else 1)
            lines[1:1] = [{"step": k, "step_s": step_s + 0.1 * (k % 3), "accuracy": None} for k in range(1, 10)]
            (path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
            info = json.loads((path / "run.json").read_text())
            wall = 20 * step_s + 4 * m * 0.25 + 100.0
            (path / "run.json").write_text(json.dumps({**info, "wall_time_s": wall}))
            if outcomes:  # eval_outcomes.jsonl as specified: one line per final evaluation, agreeing with metrics
                bits = "".join("1" if c else "0" for c in correct)
                (path / "eval_outcomes.jsonl").write_text("".join(json.dumps(
                    {"step": 20, "eval_quant": "mxfp4/w4a4", "eval_lora": lora, "test_set_sha256": "ab" * 32,
                     "ids": [f"p{i}" for i in range(m)], "strict": bits, "flexible": bits}) + "\n"
                    for lora in ("separate", "merged")))
    return root
