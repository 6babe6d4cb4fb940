"""`srdd correlate RUNS_DIR -o OUT_DIR`."""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from srdd.errors import SrddError

EPILOG = """examples:
  srdd correlate runs/ -o report/
  srdd correlate runs/ -o report/ --baseline E13i-baseline --target 0.6088 --metric sqnr_db
  srdd correlate runs/ -o report/ --hypotheses C1,C2,C3   # Holm across these three; the rest exploratory

Runs whose configs differ only in seed are grouped (mean, std, n): seeds are the replicates. Invalid
runs (not complete, mixed quant modes, missing scans, corrupt metrics, no evaluation of the chosen
--accuracy) are listed with the reason and left out.

Each hypothesis of the suite compares two arms' final accuracies. When every arm of the report's
hypotheses ran the same seeds (complete blocks) they are compared in the arm + seed model with
per-arm residual variances (Satterthwaite df); otherwise with Welch's t-test, and the report says
why. --analysis declares another: pooled (one residual variance; shown with a heterogeneity check
and the per-arm analysis beside it), welch, or permutation (exact, but at 3 seeds per arm its
smallest p is 0.1). Each row: the difference, its 95 % CI, the p-value, the Holm-adjusted p across
the report's hypotheses, and the smallest difference the analysis could detect at 80 % power.
Verdicts: supported/refuted (>= 3 seeds per arm and adjusted p < 0.05), "equivalent within ±m pp"
(TOST; m = --margin, the study's smallest effect of interest), inconclusive (with the reason), not
tested. Arms whose configs differ in more than the hypothesis is about are reported as confounded.

The hypotheses are the suite's (its suite.json: the suite _study/study.json names, else RUNS/../suite).
A confirmatory study declares its family before it runs (srdd study run --hypotheses C1,C2,C3): the
report then Holm-adjusts across that family alone and labels every other hypothesis exploratory
(adjusted among themselves). Without a declaration every hypothesis of the suite is one family."""


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
    p.add_argument("--accuracy", choices=["merged", "separate"], default="merged",
                   help="which final accuracy arms are compared on: merged = LoRA merged into the weights and "
                        "re-quantized, as deployed (default); separate = fp LoRA beside the quantized base, as "
                        "trained. Never mixed in one report")
    p.add_argument("--analysis", choices=["auto", "blocked", "pooled", "welch", "permutation"],
                   help="how arms are compared (default: the study's declared analysis, else auto = blocked "
                        "with complete blocks, Welch without)")
    p.add_argument("--margin", type=float, metavar="PP",
                   help="smallest effect of interest in percentage points: the 'equivalent within ±PP pp' "
                        "margin (default: the study's declared margin, else the suite's target - baseline gap, "
                        "else 5; never below one test problem, 100/m)")
    p.add_argument("--hypotheses", metavar="KEY,...",
                   help="the confirmatory family, e.g. C1,C2,C3: Holm across these, every other hypothesis "
                        "exploratory (default: the study's declared family, else every hypothesis of the suite "
                        "in one family)")
    p.add_argument("--plan", type=Path, metavar="PLAN.json",
                   help="the power plan the study was sized by (srdd study plan RUNS --json): its variance "
                        "components are set beside the ones the study's runs show, at the study's test-set size")
    p.add_argument("--force", action="store_true", help="replace an existing OUT directory")
    p.set_defaults(func=run)


MARKER = ".srdd-report"
"""Written into every report directory: --force replaces only a directory holding it."""


def check_out(out: Path, runs: Path, force: bool) -> None:
    """-o must be a new directory, or with --force a report srdd wrote, and never near the runs."""
    if out.is_symlink():
        raise SrddError(f"-o {out} is a symlink; srdd never writes through one (give a real path)")
    if not out.parent.is_dir():
        raise SrddError(f"cannot write {out}: {out.parent} does not exist")
    real_out, real_runs = out.resolve(), runs.resolve()
    if real_out == real_runs or real_runs in real_out.parents or real_out in real_runs.parents:
        raise SrddError(f"-o {out} holds or is inside the runs directory {runs}; write the report elsewhere")
    if not out.exists():
        return
    if not out.is_dir():
        raise SrddError(f"-o {out} exists and is not a directory; srdd writes a report directory there")
    if not force:
        raise SrddError(f"{out} already exists; pass --force to replace it")
    if not (out / MARKER).is_file() or (out / MARKER).is_symlink():
        raise SrddError(f"{out} is not a report srdd wrote (no {MARKER} in it); --force replaces only "
                        "those, so remove it yourself or choose another -o")


def parse_target(target: str | None) -> float | str | None:
    """--target as an accuracy (a fraction 0..1) or a run/group name, checked later against the runs."""
    if target is None:
        return None
    try:
        value = float(target)
    except ValueError:
        return target
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise SrddError(f"--target {target}: an accuracy is a fraction 0..1 (e.g. 0.6088)")
    return value


def check_names(runs, baseline: str | None, target: float | str | None) -> None:
    from reports.runs import group_runs

    names = {g.name for g in group_runs([r for r in runs if r.valid])} | {r.name for r in runs if r.valid}
    for flag, name in (("--baseline", baseline), ("--target", target)):
        if isinstance(name, str) and name not in names:
            raise SrddError(f"{flag} {name!r} names no valid run or group; valid: {', '.join(sorted(names))}")


def run(args) -> int:
    from reports import figures
    from reports.build import build_report
    from reports.hypotheses import parse_keys
    from reports.render import html_page, markdown
    from reports.runs import load_runs
    from reports.settings import resolve
    from reports.variance import load_plan
    from srdd.jsonio import dumps_json, new_dir_mode

    check_out(args.out, args.runs, args.force)
    target = parse_target(args.target)
    if args.margin is not None and not (math.isfinite(args.margin) and 0 < args.margin < 100):
        raise SrddError(f"--margin {args.margin:g}: a smallest effect of interest is in (0, 100) percentage points")
    keys = None if args.hypotheses is None else parse_keys(args.hypotheses)
    runs = load_runs(args.runs, args.metric, args.accuracy)
    check_names(runs, args.baseline, target)
    sizes = [r.test_size for r in runs if r.valid and r.test_size]
    resolved = resolve(args.runs, analysis=args.analysis, margin_pp=args.margin,
                       test_size=min(sizes) if sizes else None, hypotheses=keys)
    for r in runs:
        if not r.valid:
            print(f"left out {r.name}: {r.reason}", file=sys.stderr)
    sources = {"analysis": resolved.analysis_source, "margin": resolved.margin_source}
    if resolved.family_source is not None:  # an undeclared study's report keeps the keys it always had
        sources["hypotheses"] = resolved.family_source
    plan = None if args.plan is None else (str(args.plan), load_plan(args.plan))
    report = build_report(runs, metric=args.metric, baseline=args.baseline, target=args.target,
                          settings=resolved.settings, sources=sources, hypotheses=resolved.hypotheses, plan=plan)
    valid = [r for r in runs if r.valid]
    figs = {"layer_profiles.png": figures.layer_profiles(valid, args.metric),
            "trajectories.png": figures.trajectories(valid),
            "delta_vs_accuracy.png": figures.delta_vs_accuracy(
                [statistics.fmean(r.delta) for r in valid], [r.final_accuracy for r in valid],
                [r.name for r in valid], args.metric, report["accuracy"])}
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
    tmp.chmod(new_dir_mode())  # the report directory is as readable as one mkdir makes
    try:
        (tmp / "figures").mkdir()
        for name, png in figs.items():
            (tmp / "figures" / name).write_bytes(png)
        (tmp / "report.json").write_text(dumps_json(report))
        (tmp / "report.md").write_text(markdown(report, figs))
        (tmp / "report.html").write_text(html_page(report, figs))
        (tmp / MARKER).write_text("a report written by srdd correlate; --force may replace this directory\n")
        check_out(args.out, args.runs, args.force)  # unchanged while the report was built
        if args.out.exists():
            shutil.rmtree(args.out)
        tmp.rename(args.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print((args.out / "report.md").read_text())
    print(f"wrote {args.out}/report.json, report.md, report.html and figures/")
    return 0
