"""`srdd ingest verl LOG -o runs/NAME --quant mxfp4/w4a4`."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """examples:
  srdd ingest verl train.log -o runs/E13j-variable-s0 --quant mxfp4/w4a4 --config study/E13j-variable.yaml
  srdd ingest verl metrics.jsonl -o runs/E13i-baseline-s1 --quant mxfp4/w4a4 --config study/E13i-baseline.yaml \\
      --scan-before scan_base.json --scan-after scan_trained.json
  srdd ingest verl metrics.jsonl -o runs/E13j-variable-s1 --quant mxfp4/w4a4 --config study/E13j-variable.yaml \\
      --generations val_generations/ --val-file data/gsm8k/test.parquet --model /models/Qwen2.5-1.5B-Instruct

Reads verl's console log (step:N - key:value - ...) or its JSONL file logger. Accuracy comes from
val-core/openai/gsm8k/acc/mean@1 (or the older .../reward/mean@1), reward from critic/score/mean.
The run is `complete` only when the last logged step carries a validation accuracy.

Per-problem outcomes (eval_outcomes.jsonl, what `srdd flips` compares) need the samples verl dumps
when trainer.validation_data_dir is set (srdd train --engine verl sets it to the run's
verl/generations/): give that directory with --generations, the data.val_files parquet the run
validated on with --val-file, and the model it trained with --model (its tokenizer renders the
prompts the way the dump shows them). Each sample is matched to its test problem by that prompt
text; a dump that does not fit the test set or the logged accuracy is refused, nothing written.
Without them the run has no per-problem outcomes."""


def register(sub) -> None:
    p = sub.add_parser("ingest", help="turn a verl run's logs into a srdd run directory",
                       description="Turn the logs of a run trained elsewhere (verl) into a srdd run directory "
                                   "(run.json, metrics.jsonl, scans), so srdd correlate compares it with the others.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("engine", choices=["verl"], help="the engine that wrote the log (verl)")
    p.add_argument("log", type=Path, help="verl's console log or its JSONL file-logger output")
    p.add_argument("-o", "--out", type=Path, required=True,
                   help="run directory to create (never overwritten), e.g. runs/E13i-baseline-s1")
    p.add_argument("--quant", required=True, help="precision the validation ran under, e.g. mxfp4/w4a4")
    p.add_argument("--name", help="run name recorded in run.json (default: the name of the --out directory)")
    p.add_argument("--seed", type=int, default=0,
                   help="the seed the verl run used (default 0); reports group runs that differ only by seed")
    p.add_argument("--config", type=Path, required=True,
                   help="YAML with the run's settings (must hold its noise section), e.g. the E13 suite file")
    p.add_argument("--scan-before", type=Path, help="srdd.scan/v1 of the model before training, copied into the run")
    p.add_argument("--scan-after", type=Path, help="srdd.scan/v1 of the trained model, copied into the run")
    p.add_argument("--generations", type=Path, metavar="DIR",
                   help="verl's trainer.validation_data_dir ({step}.jsonl per validation): per-problem outcomes")
    p.add_argument("--val-file", type=Path, help="with --generations: the data.val_files parquet the run validated on")
    p.add_argument("--model", help="with --generations: the model the run trained (HF directory or name), for its "
                                   "tokenizer")
    p.set_defaults(func=run)


DUMP_FLAGS = ("generations", "val_file", "model")


def _dumps(args):
    from rin_train.verl.ingest import Dumps
    from srdd.errors import SrddError

    given = [getattr(args, flag) is not None for flag in DUMP_FLAGS]
    if not any(given):
        return None
    if not all(given):
        missing = ", ".join("--" + flag.replace("_", "-") for flag, g in zip(DUMP_FLAGS, given) if not g)
        raise SrddError(f"per-problem outcomes need --generations, --val-file and --model together (missing: {missing})")
    return Dumps(args.generations, args.val_file, args.model)


def run(args) -> int:
    from rin_train.verl.ingest import ingest

    dumps = _dumps(args)
    result = ingest(args.log, args.out, quant=args.quant, name=args.name, config=args.config, seed=args.seed,
                    scan_before=args.scan_before, scan_after=args.scan_after, dumps=dumps)
    info = result.info()
    print(f"{args.out}: {len(result.logged_steps())} steps, status {info['status']}"
          + (f" ({info['reason']})" if info["reason"] else ""))
    if dumps is None:
        print("per-problem outcomes: none (no --generations: verl's logs hold only accuracies), so this run has no "
              "eval_outcomes.jsonl; reports bound the problem part of its variance, and srdd flips cannot compare it")
    else:
        print(f"per-problem outcomes of every validation, from {args.generations} -> {result.outcomes_path}")
    return 0 if info["status"] == "complete" else 1
