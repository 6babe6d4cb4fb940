"""`srdd train`: one quantized GRPO run with noise injection into a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from srdd.errors import SrddError

EPILOG = """examples:
  srdd train --preset smoke --out runs/smoke                     # tiny random model, seconds
  srdd train --preset demo --out runs/demo                       # SmolLM2, ~10 min on a laptop CPU
  srdd train study/E13j-variable.yaml --out runs/E13j-s0 --set seed=0 --set model=smollm2
  srdd train runs/E13j-s0 --resume --out runs/E13j-s0            # continue a killed run

The run directory holds run.json (resolved config, versions, status), metrics.jsonl (one line per step:
sigma scheduled and achieved per layer, reward, accuracy with the quant mode it was measured under),
scan_before.json and scan_after.json. It is never overwritten; a run is `complete` only when its final
step was validated."""


def register(sub) -> None:
    p = sub.add_parser("train", help="quantized GRPO with scan-guided noise (TRL, single machine)",
                       description="Train a LoRA policy with GRPO under W4A4 fake quantization and noise injection.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="run config YAML (partial configs are filled with defaults)")
    p.add_argument("--out", type=Path, required=True, help="run directory to create (runs/NAME)")
    p.add_argument("--preset", choices=["smoke", "demo"])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set grpo.steps=10 (repeatable)")
    p.add_argument("--name", help="run name (default: the --out directory name, e.g. E13j-variable-s0)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--engine", choices=["trl"], default=None,
                   help="trl (single machine); the verl engine is not available in this version")
    p.set_defaults(func=run)


def run(args) -> int:
    from rin_train.presets import preset
    from rin_train.run_config import load_run_config
    from rin_train.train import run_training

    if args.resume:
        from srdd.jsonio import read_json

        info = read_json(args.out / "run.json", what="run.json")
        cfg = load_run_config(info["config"])
    else:
        if args.config is None and args.preset is None:
            raise SrddError("give a config file or --preset smoke|demo")
        if args.out.exists():
            raise SrddError(f"run directory {args.out} already exists; runs are never overwritten")
        cfg = load_run_config(args.config, preset=preset(args.preset), sets=args.set,
                              name=args.name or args.out.name)
        if cfg.engine != "trl":
            raise SrddError("only the trl engine is available in this version")
    result = run_training(cfg, args.out, resume=args.resume)
    info = result.info()
    records = [r for r in result.logged_steps() if r.get("accuracy") is not None]
    for r in records:
        print(f"step {r['step']:>4}: accuracy {100 * r['accuracy']:.1f}% (flexible "
              f"{100 * r['accuracy_flexible']:.1f}%) under {r['eval_quant']}")
    print(f"run {info['name']}: {info['status']}" + (f" ({info['reason']})" if info["reason"] else "")
          + f" -> {args.out}")
    return 0 if info["status"] == "complete" else 1
