"""`srdd correlate RUNS_DIR -o OUT_DIR`."""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from srdd.errors import SrddError

EPILOG = """examples:
  srdd correlate runs/ -o report/
  srdd correlate runs/ -o report/ --baseline E13i-baseline --target 0.6088 --metric sqnr_db

Runs whose configs differ only in seed are grouped (mean, std, n). Invalid runs (not complete, mixed
quant modes, missing scans, corrupt metrics) are listed with the reason and left out. A difference is
called only when it exceeds the seed spread and the compared configs differ in nothing else."""


def register(sub) -> None:
    p = sub.add_parser("correlate", help="correlations, verdicts and plots across run directories",
                       description="Does the scan predict what noise does? Read run directories and write "
                                   "report.json, report.md, report.html and figures/.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, help="directory holding run directories")
    p.add_argument("-o", "--out", type=Path, required=True,
                   help="report directory to write (report.json, report.md, report.html, figures)")
    p.add_argument("--baseline", help="baseline run or group name (default: the group named *baseline*)")
    p.add_argument("--target", help="target: a run/group name or an accuracy (fraction)")
    p.add_argument("--metric", choices=["relative_error", "deadzone_ratio", "sqnr_db"], default="relative_error",
                   help="scan metric whose per-layer change (scan after vs before) is correlated (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--force", action="store_true", help="replace an existing OUT directory")
    p.set_defaults(func=run)


def run(args) -> int:
    from reports import figures
    from reports.build import build_report
    from reports.render import html_page, markdown
    from reports.runs import load_runs
    from srdd.jsonio import dumps_json, new_dir_mode

    if args.out.exists() and not args.force:
        raise SrddError(f"{args.out} already exists; pass --force to replace it")
    if not args.out.parent.exists():
        raise SrddError(f"cannot write {args.out}: {args.out.parent} does not exist")
    runs = load_runs(args.runs, args.metric)
    for r in runs:
        if not r.valid:
            print(f"left out {r.name}: {r.reason}", file=sys.stderr)
    report = build_report(runs, metric=args.metric, baseline=args.baseline, target=args.target, seed=args.seed)
    valid = [r for r in runs if r.valid]
    figs = {"layer_profiles.png": figures.layer_profiles(valid, args.metric),
            "trajectories.png": figures.trajectories(valid),
            "delta_vs_accuracy.png": figures.delta_vs_accuracy(
                [statistics.fmean(r.delta) for r in valid], [r.final_accuracy for r in valid],
                [r.name for r in valid], args.metric)}
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
    tmp.chmod(new_dir_mode())  # the report directory is as readable as one mkdir makes
    try:
        (tmp / "figures").mkdir()
        for name, png in figs.items():
            (tmp / "figures" / name).write_bytes(png)
        (tmp / "report.json").write_text(dumps_json(report))
        (tmp / "report.md").write_text(markdown(report, figs))
        (tmp / "report.html").write_text(html_page(report, figs))
        if args.out.exists():
            shutil.rmtree(args.out)
        tmp.rename(args.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print((args.out / "report.md").read_text())
    print(f"wrote {args.out}/report.json, report.md, report.html and figures/")
    return 0
