"""Fixed tiny runs whose results every speed or memory change must keep: their golden files and how to make them.

A golden file holds everything a run computed (each metrics.jsonl record without its
timings, and the after-training scan's per-layer numbers, which depend on every LoRA weight)
plus the platform it was made on: float results depend on the CPU kernels torch picks (AVX2 vs
AVX512) and on the thread count, so the runs use one thread, the files sit in one directory per CPU
capability (golden/AVX2, golden/AVX512: both made from the reference code 7b4ef43), and a file is
compared only on the platform that made it. The metrics must match bit for bit; the scan's numbers are
float64 sums whose order of additions srdd's own kernel build chooses (portable, AVX2, AVX-512), so they are
compared as tests/json_compare.py says (counts exactly, floats to a relative 1e-9).

    PYTHONPATH=<checkout> python -m tests.rin_train.golden_runs   # rewrite the files from <checkout>'s code

Make them with the code whose results are the reference (main before an optimisation),
never with the code under test.
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

GOLDEN_DIR = Path(__file__).parent / "golden"
TIMING_KEYS = ("step_s", "wall_s")
LEARN = ["grpo.steps=6", "eval.every=3", "grpo.save_every=6", "eval.samples=16"]
CASES: dict[str, tuple[str, list[str]]] = {
    # MXFP4 W4A4 with bf16 GEMMs (grpo.matmul_dtype auto) and linear-weight noise: the default policy path
    "learn-mxfp4-w4a4": ("learn", LEARN),
    # NVFP4 W4A16 with fp32 GEMMs: the committed SmolLM2 study's policy path
    "learn-nvfp4-w4a16": ("learn", [*LEARN, "quant.format=nvfp4", "quant.mode=w4a16"]),
    # the same with two micro-batches per step: gradient accumulation
    "learn-nvfp4-w4a16-micro": ("learn", [*LEARN, "quant.format=nvfp4", "quant.mode=w4a16",
                                          "grpo.micro_batch_size=32"]),
}


def platform_key() -> dict:
    return {"torch": torch.__version__.split("+")[0], "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "machine": platform.machine(), "threads": 1}


def run_case(name: str) -> dict:
    """Train case `name` in a temp dir on one thread; what it computed, as plain data."""
    from rin_train.presets import preset
    from rin_train.run_config import load_run_config
    from rin_train.train import run_training

    preset_name, sets = CASES[name]
    cfg = load_run_config(None, sets, preset=preset(preset_name), name=name)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = run_training(cfg, Path(tmp) / name)
            records = [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in run.logged_steps()]
            scan = json.loads(run.scan_path("after").read_text())
            status = run.info()["status"]
    finally:
        torch.set_num_threads(threads)
    return {"case": name, "preset": preset_name, "sets": sets, "status": status, "metrics": records,
            "scan_after_layers": scan["layers"]}


def golden_path(name: str, capability: str | None = None) -> Path:
    """Case `name`'s golden file for a CPU capability (torch's name for it; default: this CPU's)."""
    return GOLDEN_DIR / (capability or platform_key()["cpu_capability"]) / f"{name}.json"


def write_goldens(names: list[str]) -> None:
    for name in names:
        golden_path(name).parent.mkdir(parents=True, exist_ok=True)
        doc = {"platform": platform_key(), **run_case(name)}
        golden_path(name).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {golden_path(name)}")


if __name__ == "__main__":
    write_goldens(sys.argv[1:] or list(CASES))
