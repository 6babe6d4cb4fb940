"""`srdd ingest verl LOG -o runs/NAME --quant mxfp4/w4a4`."""

from __future__ import annotations

import argparse
from pathlib import Path

EPILOG = """examples:
  srdd ingest verl train.log -o runs/E13j-variable-s0 --quant mxfp4/w4a4 --config study/E13j-variable.yaml
  srdd ingest verl metrics.jsonl -o runs/E13i-baseline-s1 --quant mxfp4/w4a4 --config study/E13i-baseline.yaml \\
      --scan-before scan_base.json --scan-after scan_trained.json

Reads verl's console log (step:N - key:value - ...) or its JSONL file logger. Accuracy comes from
val-core/openai/gsm8k/acc/mean@1 (or the older .../reward/mean@1), reward from critic/score/mean.
The run is `complete` only when the last logged step carries a validation accuracy."""


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
    p.set_defaults(func=run)


def run(args) -> int:
    from rin_train.outcomes import NOT_FROM_VERL
    from rin_train.verl.ingest import ingest

    result = ingest(args.log, args.out, quant=args.quant, name=args.name, config=args.config, seed=args.seed,
                    scan_before=args.scan_before, scan_after=args.scan_after)
    info = result.info()
    print(f"{args.out}: {len(result.logged_steps())} steps, status {info['status']}"
          + (f" ({info['reason']})" if info["reason"] else ""))
    print(NOT_FROM_VERL)
    return 0 if info["status"] == "complete" else 1
