"""`srdd train`: one quantized GRPO run with noise injection, into a run directory.

Engines: `trl` runs here (rin_train.train); `verl` is delegated to
`rin_train.verl.engine`, imported only when asked for, which must expose
`main(cfg: RunConfig, args: argparse.Namespace) -> int` (args carries out, launch, ...).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from srdd.errors import SrddError, disk_full

EPILOG = """examples:
  srdd train --preset smoke --out runs/smoke                # tiny random model, seconds
  srdd train --preset learn --out runs/learn                # tiny model that learns its task, ~40 s (OMP_NUM_THREADS=1)
  srdd train --preset demo --out runs/demo                  # SmolLM2-135M, a few dozen steps, minutes
  srdd train study/E13j-variable.yaml --out runs/E13j-variable-s0 --set seed=0
  srdd train study/E13i-baseline.yaml --out runs/b-s1 --set seed=1 --set grpo.steps=29
  srdd train --resume --out runs/E13j-variable-s0           # continue a killed or failed run
  srdd train study/E13j-variable.yaml --out runs/v --engine verl [--launch]

Precedence: defaults < --preset < CONFIG < --set. A partial CONFIG is filled with defaults; an
unknown key, a bad value, noise settings for layers the model lacks, or an existing --out is an
error before anything is trained.

The run directory holds run.json (resolved config, versions, seed, status), metrics.jsonl (one
line per step: sigma scheduled and achieved per layer, reward, zero-variance groups, accuracy with
the quant mode it was measured under), eval_outcomes.jsonl (each validation's per-problem strict
and flexible correctness; `srdd flips` compares two runs with it), scan_before.json and
scan_after.json. It is never overwritten; a run is `complete` only when its final step was
validated. Exit codes: 0 complete, 1 failed/invalid, 2 bad input, 3 stalled (watchdog)."""


def register(sub) -> None:
    from rin_train.presets import preset_names

    p = sub.add_parser("train", help="quantized GRPO with scan-guided noise (TRL here, or verl)",
                       description="Train a LoRA policy with GRPO under 4-bit fake quantization and noise "
                                   "injection; write a run directory.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", type=Path, help="run config YAML (partial configs are filled with defaults)")
    p.add_argument("--out", type=Path, required=True, help="run directory to create (runs/NAME); never overwritten")
    p.add_argument("--preset", choices=preset_names(), help="smoke: tiny random model, seconds; learn: tiny model "
                                                           "on a task it learns in 20 steps, ~40 s with "
                                                           "OMP_NUM_THREADS=1; demo: SmolLM2-135M, a few dozen "
                                                           "steps; NAME@N: version N of a preset (NAME: the latest)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key with a YAML value, e.g. --set grpo.steps=10 "
                        "--set 'noise.targets=[rmsnorm]' (repeatable)")
    p.add_argument("--name", help="run name (default: the --out directory name)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (its recorded config) from its last checkpoint")
    p.add_argument("--step0-cache", type=Path, metavar="DIR",
                   help="share the untrained policy's step-0 validation with other runs through DIR (srdd study "
                        "passes RUNS/_study/step0): a run whose config differs only in seed and name, on the same "
                        "model files, code and machine, copies the stored result instead of validating again")
    p.add_argument("--engine", choices=["trl", "verl"], default=None,
                   help="trl: GRPO on this machine (default); verl: write the verl command for this config")
    p.add_argument("--launch", action="store_true", help="verl engine: also run the command it writes")
    p.add_argument("--verbose", action="store_true",
                   help="print every quantized module (always written to quantized_modules.txt in the run directory)")
    p.set_defaults(func=run)


def resolve_config(args):
    from rin_train.presets import preset
    from rin_train.run_config import config_for_resume, load_run_config

    if args.resume:
        if args.config is not None or args.preset or args.sets or args.name or args.engine:
            raise SrddError("--resume continues a run with the config recorded in its run.json; "
                            "do not give CONFIG, --preset, --set, --name or --engine with it")
        from rin_train.rundir import RunDir

        run = RunDir.open(args.out)
        run.refuse_symlinks()
        return config_for_resume(run.config)
    if args.config is None and args.preset is None:
        raise SrddError("give a config file or --preset smoke|learn|demo")
    sets = list(args.sets) + ([f"engine={args.engine}"] if args.engine else [])
    return load_run_config(args.config, sets, preset=preset(args.preset), name=args.name or args.out.name)


def run(args) -> int:
    if not args.resume and (args.out.exists() or args.out.is_symlink()):
        raise SrddError(f"run directory {args.out} already exists; runs are never overwritten "
                        "(choose another --out, or pass --resume to continue that run)")
    cfg = resolve_config(args)
    if cfg.engine == "verl":
        if args.step0_cache is not None:
            raise SrddError("--step0-cache is for the trl engine (verl validates in its own workers)")
        import importlib
        import importlib.util

        if importlib.util.find_spec("rin_train.verl.engine") is None:
            raise SrddError("the verl engine (rin_train.verl.engine) is not part of this installation")
        engine_verl = importlib.import_module("rin_train.verl.engine")
        return int(engine_verl.main(cfg, args) or 0)
    if args.launch:
        raise SrddError("--launch is for --engine verl")
    from rin_train.signals import Terminated
    from rin_train.train import run_training

    try:
        result = run_training(cfg, args.out, resume=args.resume, verbose=args.verbose, step0_cache=args.step0_cache)
    except Terminated as exc:
        print(f"srdd train: {exc}; run {args.out} marked failed (continue it with --resume)")
        return 1
    except (OSError, RuntimeError) as exc:
        if not disk_full(exc):
            raise
        print(f"srdd train: error: {str(exc).splitlines()[0]}; run {args.out} marked failed (free some space, then "
              "continue it with --resume)", file=sys.stderr)
        return 1
    info = result.info()
    evals = [r for r in result.logged_steps() if r.get("accuracy") is not None]
    if evals:
        print("accuracy by step (strict, flexible; greedy, no noise):")
        for r in evals:
            print(f"  step {r['step']:>4}: {100 * r['accuracy']:5.1f}%  {100 * r['accuracy_flexible']:5.1f}%  "
                  f"under {r['eval_quant']}, LoRA {r.get('eval_lora') or 'separate'}")
            merged = r.get("eval_merged")
            if merged:
                print(f"  step {r['step']:>4}: {100 * merged['accuracy']:5.1f}%  "
                      f"{100 * merged['accuracy_flexible']:5.1f}%  under {merged['eval_quant']}, LoRA merged "
                      "(as deployed)")
    print(f"run {info['name']}: {info['status']}" + (f" ({info['reason']})" if info.get("reason") else "")
          + f" -> {args.out}")
    return 0 if info["status"] == "complete" else 1
