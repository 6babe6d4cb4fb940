"""`srdd flips RUN_A RUN_B`: which test problems two runs' final evaluations disagree on."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from srdd.errors import SrddError

EPILOG = """examples:
  srdd flips runs/E13i-baseline-s0 runs/E13j-variable-s0
  srdd flips runs/E13i-baseline-s0 runs/E13j-variable-s0 --lora separate --kind flexible --json

Each run's final evaluation (its largest evaluated step; --lora merged by default, as deployed) is read
from its eval_outcomes.jsonl, one line per evaluation with every problem's id and strict/flexible
correctness. The two must have evaluated the same test set in the same order (the lines carry its
sha256), else nothing is compared.

  gained   problems wrong in RUN_A and right in RUN_B
  lost     problems right in RUN_A and wrong in RUN_B
  net      gained - lost: how many more problems RUN_B solves

Only gained and lost carry evidence about a difference between the two runs (the discordant pairs
of McNemar's test); problems both runs get right or wrong say nothing about it. A large accuracy
gap built from a handful of flips is a handful of problems.

verl runs validate the policy as trained, never merged: compare them with --lora separate. Their
outcomes come from the samples verl dumps at each validation (srdd train --engine verl --launch
collects them; srdd ingest verl --generations for a run launched elsewhere). Runs written before
per-problem outcomes were stored, and verl runs without those dumps, have no eval_outcomes.jsonl:
for them a report can bound the problem part of the variance, never measure it, and this command
has nothing to compare."""


def register(sub) -> None:
    p = sub.add_parser("flips", help="which test problems two runs' final evaluations disagree on",
                       description="Compare two runs problem by problem: which problems RUN_B solves that RUN_A "
                                   "does not, and the reverse.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_a", type=Path, metavar="RUN_A", help="run directory (e.g. the baseline seed)")
    p.add_argument("run_b", type=Path, metavar="RUN_B", help="run directory compared with RUN_A")
    p.add_argument("--lora", choices=["merged", "separate"], default="merged",
                   help="which final evaluation: merged = LoRA merged and re-quantized, as deployed (default); "
                        "separate = fp LoRA beside the quantized base, as trained")
    p.add_argument("--kind", choices=["strict", "flexible"], default="strict",
                   help="correctness: strict = the number after '####' (default, what accuracy means); "
                        "flexible = the last number anywhere in the answer")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def _final(run_dir: Path, lora: str):
    from reports.outcomes import EVAL_LORAS, final_outcomes

    if not (run_dir / "run.json").is_file():
        raise SrddError(f"{run_dir} is not a run directory (no run.json)")
    outcomes = final_outcomes(run_dir, lora)
    if outcomes is None:
        other = next(o for o in EVAL_LORAS if o != lora)
        if final_outcomes(run_dir, other) is not None:
            raise SrddError(f"{run_dir} has per-problem outcomes with LoRA {other} only (a verl run validates the "
                            f"policy as trained): compare with --lora {other}")
        raise SrddError(f"{run_dir} has no per-problem outcomes with LoRA {lora} (no eval_outcomes.jsonl line): runs "
                        "from before they were stored, and verl runs without validation dumps, keep only accuracies")
    return outcomes


def run(args) -> int:
    from reports.outcomes import flips

    a, b = _final(args.run_a, args.lora), _final(args.run_b, args.lora)
    result = flips(a, b, args.kind)
    if args.json:
        print(json.dumps({"kind": args.kind, "eval_lora": args.lora, "test_set_sha256": a.test_set_sha256, "n": a.n,
                          "a": {"run": str(args.run_a), "step": a.step, "accuracy": a.accuracy(args.kind)},
                          "b": {"run": str(args.run_b), "step": b.step, "accuracy": b.accuracy(args.kind)},
                          "gained": list(result.gained), "lost": list(result.lost), "net": result.net,
                          "both_right": result.both_right, "both_wrong": result.both_wrong}, indent=1))
        return 0
    print(f"{args.kind} correctness, LoRA {args.lora}, {a.n} problems (test set {a.test_set_sha256[:12]})")
    for label, path, o in (("A", args.run_a, a), ("B", args.run_b, b)):
        print(f"  {label} {path}: step {o.step}, {100 * o.accuracy(args.kind):.1f} % under {o.eval_quant}")
    for what, ids in (("gained (wrong in A, right in B)", result.gained), ("lost (right in A, wrong in B)", result.lost)):
        print(f"{what}: {len(ids)}")
        if ids:
            print(textwrap.fill(" ".join(ids), width=100, initial_indent="  ", subsequent_indent="  "))
    print(f"net {result.net:+d} problems; both right {result.both_right}, both wrong {result.both_wrong}")
    return 0
