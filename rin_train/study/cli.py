"""`srdd study run | status | report`: a calibrate suite x seeds, resumable, then `srdd correlate`."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from srdd.errors import SrddError

EPILOG = """examples:
  srdd calibrate scan.json -o multipliers.yaml --suite study/          # the suite: one config per arm
  srdd study run study/ --seeds 0,1,2 --runs runs/                     # every arm + control x 3 seeds
  srdd study run study/ --seeds 0,1,2 --runs runs/ --set model=smollm2 --set grpo.steps=36 \\
      --only control,E13i-baseline,E13j-variable                        # a subset now, the rest later
  srdd study status runs/                                              # arm x seed table, time left
  srdd study run study/ --seeds 0,1,2,3,4,5 --runs confirm/ --hypotheses C1,C2,C3 --margin 5 \\
      --arms control,E13i-baseline,E13m-rmsnorm,E13j-variable         # pre-registered: 4 arms, one family
  srdd study run study/ --seeds 0,1,2 --runs runs/ --retry-failed      # after fixing what failed
  srdd study report runs/ -o report/ --force --metric sqnr_db          # = srdd correlate
  srdd study plan runs/ --effect 5                                     # seeds and test-set sizes for 5 pp
  srdd study plan runs/ --effect 5 --hypotheses C1,C2,C3               # ... for the confirmatory family
  srdd study plan --design p4=pilot-4/ --design p8=pilot-8/ --effect 5 # which pilot design is cheapest

A study is one setting: the suite's files, --seeds, --set and the declared --analysis, --margin and
--hypotheses are recorded in RUNS/_study/study.json on the first call, and a call with other settings
for the same RUNS is refused (--only, --no-control and --retry-failed only choose what runs now).
Runs go one after another, seed by seed, each in RUNS/<arm>-s<seed> as a child `srdd train` with the
trl engine; the control arm is the suite's baseline with noise.enabled false (RUNS/_study/control.yaml).
Run it again at any time: complete runs are skipped, killed or interrupted ones resumed (Ctrl-C or
SIGTERM stops the current run cleanly), failed or invalid ones reported and, with --retry-failed,
moved to RUNS/_failed/ and run anew. When every run is complete it writes the report
(srdd correlate) to --report-dir. Exit codes: 0 every selected run complete, 1 some not, 2 bad input,
130/143 interrupted."""


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def register(sub) -> None:
    p = sub.add_parser("study", help="run a calibrate suite x seeds (resumable), show progress, report",
                       description="Run every arm of a `srdd calibrate --suite` plus a no-noise control for "
                                   "every seed, resume what was stopped, and report with srdd correlate.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ss = p.add_subparsers(dest="study_command", metavar="{run,status,report,plan}")
    ss.required = True

    r = ss.add_parser("run", help="run, resume or skip every arm x seed",
                      description="Run every arm of the suite x every seed as child `srdd train` runs, one after "
                                  "another; skip complete runs, resume stopped ones, then write the report.",
                      epilog=EPILOG,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("suite", type=Path, help="suite directory written by srdd calibrate --suite (holds suite.json)")
    r.add_argument("--seeds", required=True, help="comma-separated seeds, e.g. 0,1,2 (>= 3 for a verdict)")
    r.add_argument("--runs", type=Path, required=True, help="directory of the study's run directories")
    r.add_argument("--preset", help="a srdd train preset under every arm's config (e.g. demo: SmolLM2, its task, "
                                    "GRPO and eval settings; the suite's quant and noise win; part of the setting)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every run, as in srdd train (repeatable; part of the study's setting)")
    r.add_argument("--analysis", choices=["blocked", "pooled", "welch", "permutation"],
                   help="declare the report's analysis (default: blocked when every arm ran the same seeds, else "
                        "Welch; pooled only as a declared choice, reported beside the robust one); part of the setting")
    r.add_argument("--margin", type=float, metavar="PP",
                   help="declare the smallest effect of interest in percentage points: the equivalence margin "
                        "(default: the suite's target - baseline gap, else 5 pp); part of the setting")
    r.add_argument("--hypotheses", metavar="KEY,...",
                   help="declare the confirmatory family, e.g. C1,C2,C3: the report Holm-adjusts across these "
                        "alone and labels every other hypothesis exploratory (default: every hypothesis of the "
                        "suite in one family); part of the setting")
    r.add_argument("--arms", metavar="NAME,...",
                   help="declare the study's arms, e.g. control,E13i-baseline (default: the control and every arm "
                        "of the suite): a pre-registered study runs these alone and reports once they are "
                        "complete; part of the setting")
    r.add_argument("--only", metavar="NAME,...", help="run only these arms now (control is an arm)")
    r.add_argument("--retry-failed", action="store_true",
                   help="move failed/invalid runs to RUNS/_failed/ and run them again")
    r.add_argument("--control", action=argparse.BooleanOptionalAction, default=True,
                   help="run the no-noise control arm (default: yes)")
    r.add_argument("--report-dir", type=Path, help="where the report goes once every run is complete "
                                                   "(default: RUNS/../report)")
    r.set_defaults(func=run)

    s = ss.add_parser("status", help="arm x seed table: status, steps, final accuracies, wall time, time left",
                      description="Show how far a study is: per run its state, steps logged, final accuracies "
                                  "(as trained and as deployed), wall time, and the time left. Reads only.")
    s.add_argument("runs", type=Path, help="the study's runs directory (the --runs of srdd study run)")
    s.set_defaults(func=status)

    pl = ss.add_parser("plan", help="from a pilot's runs: seeds per arm and test-set sizes for 80 % power, and hours",
                       description="Estimate a pilot's variance components (seed block, run, problem part) and "
                                   "print, per test-set size, the fewest seeds per arm that find --effect with 80 % "
                                   "power on every hypothesis (Holm over them), and the hours that costs by the "
                                   "pilot's own timings. With --design, do that for each of two or more pilots "
                                   "(ways to run the study) and say which is cheapest.",
                       epilog=PLAN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    pl.add_argument("runs", type=Path, nargs="?",
                    help="the pilot's runs directory (every arm of the hypotheses, same seeds); or --design")
    pl.add_argument("--design", action="append", default=[], metavar="NAME=RUNS",
                    help="a pilot of one way to run the study, e.g. p8=pilot-8prompts/runs (repeat: two or more); "
                         "compares their seeds per arm and hours and names the cheapest")
    pl.add_argument("--timing", action="append", default=[], metavar="[NAME=]RUNS",
                    help="price the plan by these runs' wall times instead of the pilot's own: the same design run "
                         "by today's code or on the study's machine (same GRPO steps and shape); with --design, "
                         "NAME=RUNS for that design (repeat)")
    pl.add_argument("--effect", type=float, required=True, metavar="PP",
                    help="effect size to detect: the difference between the two arms' mean final accuracies, in "
                         "percentage points (statsmodels' effect_size is this divided by the standard deviation; "
                         "here the pilot gives the standard deviation)")
    pl.add_argument("--hypotheses", metavar="KEY,...",
                    help="the family, e.g. C1,C2,C3: alpha is family-wise across it (Holm) (default: the pilot "
                         "study's declared family, else every hypothesis of its suite)")
    pl.add_argument("--analysis", choices=["blocked", "pooled", "welch"], default="blocked",
                    help="the analysis the study will run (default %(default)s: arm + seed, per-arm variances)")
    pl.add_argument("--sizes", default="64,128,256,512,1024", metavar="M,...", help="test-set sizes to plan for")
    pl.add_argument("--max-seeds", type=int, default=50, help="give up above this many seeds per arm")
    pl.add_argument("--json", action="store_true", help="print the plan as JSON instead of a table")
    pl.set_defaults(func=study_plan)

    import reports.cli

    reports.cli.register(_Renamed(ss, "report", "srdd correlate on the study's runs (the same options)"))


class _Renamed:
    """`srdd study report` is `srdd correlate` under another name: its parser, options and code, so the
    two can never drift apart (study run calls correlate the same way when every run is complete)."""

    def __init__(self, sub, name: str, help: str) -> None:
        self.sub, self.name, self.help = sub, name, help

    def add_parser(self, _name: str, **kwargs):
        epilog = kwargs["epilog"].replace("srdd correlate ", f"srdd study {self.name} ")  # examples under its name
        return self.sub.add_parser(self.name, **{**kwargs, "help": self.help, "epilog": epilog})


def correlate(runs: Path, out: Path, *, force: bool) -> int:
    from srdd.cli import build_parser

    args = build_parser().parse_args(["correlate", str(runs), "-o", str(out), *(["--force"] if force else [])])
    return int(args.func(args) or 0)


PLAN_EPILOG = """examples:
  srdd study plan runs/ --effect 5                               # the study's declared family, else all
  srdd study plan runs/ --effect 5 --hypotheses C1,C2,C3 --sizes 64,256 --json
  srdd study plan --design p4=pilot-p4/runs --design p8=pilot-p8/runs --effect 5 --hypotheses C1,C2,C3
  srdd study plan old-study/runs --timing pilot/runs --effect 5   # old variances, today's run times

The power analysis in statsmodels.stats.power's terms (TTestIndPower.solve_power): it solves for
nobs1, the number of observations per sample (here seeds per arm; ratio 1, every arm runs the same
seeds) given effect_size (--effect, here in percentage points, not standardized), alpha (0.05, the
significance level: the probability of a type I error, wrong rejections if the null hypothesis is
true; family-wise, so each hypothesis is tested at alpha/K under Holm) and power (0.8: one minus the
probability of a type II error, the probability that the test rejects the null hypothesis when the
effect is there), alternative two-sided. The power is simulated through the report's own analysis
(--analysis), not read from the noncentral t: at 3-10 seeds per arm the two differ.

With --design each pilot (a runs directory of a small study run one way, e.g. at some prompts per
step) is planned alike, and the design whose cheapest test-set size costs fewest hours, by its runs'
own recorded times, is named."""


def study_plan(args) -> int:
    from reports.designs import compare_designs, parse_design, table as design_table
    from reports.hypotheses import parse_keys
    from reports.plan import plan, table
    from srdd.jsonio import dumps_json

    try:
        sizes = [int(m) for m in _csv(args.sizes) or []]
    except ValueError:
        raise SrddError(f"--sizes {args.sizes}: comma-separated numbers of test problems, e.g. 64,256") from None
    keys = None if args.hypotheses is None else parse_keys(args.hypotheses)
    if (args.runs is None) == (not args.design):
        raise SrddError("give one pilot's RUNS, or two or more --design NAME=RUNS (not both)")
    options = dict(effect_pp=args.effect, hypotheses=keys, analysis=args.analysis, sizes=sizes,
                   max_seeds=args.max_seeds)
    if args.design:
        timings = dict(parse_design(t, "--timing") for t in args.timing)
        if len(timings) != len(args.timing):
            raise SrddError("--timing: one NAME=RUNS per design")
        result = compare_designs([parse_design(d) for d in args.design], **options, timings=timings)
        print(dumps_json(result) if args.json else design_table(result))
    else:
        if len(args.timing) > 1:
            raise SrddError("--timing: one RUNS for one pilot (NAME=RUNS is for --design)")
        result = plan(args.runs, **options, timing_dir=Path(args.timing[0]) if args.timing else None)
        print(dumps_json(result) if args.json else table(result))
    return 0


def status(args) -> int:
    from rin_train.study.settings import load_settings
    from rin_train.study.status import status_lines

    print("\n".join(status_lines(load_settings(args.runs), args.runs)))
    return 0


def _command(args) -> str:
    words = ["srdd", "study", "run", str(args.suite), "--seeds", args.seeds, "--runs", str(args.runs)]
    words += ["--preset", args.preset] if args.preset else []
    words += ["--analysis", args.analysis] if args.analysis else []
    words += ["--margin", f"{args.margin:g}"] if args.margin is not None else []
    words += ["--hypotheses", args.hypotheses] if args.hypotheses is not None else []
    words += ["--arms", args.arms] if args.arms is not None else []
    words += [w for s in args.sets for w in ("--set", s)]
    words += (["--only", args.only] if args.only else []) + ([] if args.control else ["--no-control"])
    words += ["--report-dir", str(args.report_dir)] if args.report_dir else []
    return shlex.join(words)


def run(args) -> int:
    from reports.hypotheses import parse_keys
    from rin_train.study.child import Stop
    from rin_train.study.layout import CONTROL, check_report_dir, refuse_links
    from rin_train.study.ledger import StudyLock
    from rin_train.study.rundirs import State, check_only, inspect, plan, refuse_foreign
    from rin_train.study.runner import run_study
    from rin_train.study.settings import (build_settings, open_study, parse_seeds, read_suite,
                                          refuse_other_settings)

    seeds = parse_seeds(args.seeds)
    keys = None if args.hypotheses is None else parse_keys(args.hypotheses)
    only = _csv(args.only)
    check_only(only, [CONTROL, *(n for n, _ in read_suite(args.suite)[1])], args.control)  # before slow checks
    if args.runs.exists() and not args.runs.is_dir():
        raise SrddError(f"--runs {args.runs} exists and is not a directory")
    settings, control = build_settings(args.suite, args.runs, seeds, tuple(args.sets), args.preset,
                                       analysis=args.analysis, margin_pp=args.margin, hypotheses=keys,
                                       arms=_csv(args.arms))
    specs = plan(settings, args.runs, only, args.control)
    report_dir = check_report_dir(args.runs, args.report_dir, [s.name for s in plan(settings, args.runs)])
    refuse_links(args.runs)
    refuse_other_settings(args.runs, settings)
    refuse_foreign(plan(settings, args.runs))
    args.runs.mkdir(parents=True, exist_ok=True)
    with StudyLock(args.runs):
        settings = open_study(args.runs, settings, control)
        print(f"study {args.runs}: {len(specs)} runs ({len({s.arm.name for s in specs})} arms x "
              f"{len(settings.seeds)} seeds), one after another", flush=True)
        try:
            tally = run_study(settings, args.runs, specs, retry_failed=args.retry_failed,
                              say=lambda line: print(line, flush=True))
        except (KeyboardInterrupt, Stop) as exc:
            print(f"continue with: {_command(args)}", flush=True)
            if isinstance(exc, Stop):
                return 128 + exc.signum
            raise
    whole = plan(settings, args.runs)
    left = [s.name for s in whole if inspect(s.path).state is not State.COMPLETE]
    print(f"study {args.runs}: this call ran {tally.ran}; {tally.complete} of the {len(specs)} selected runs "
          f"complete, {len(whole) - len(left)} of the study's {len(whole)}", flush=True)
    if left:
        print(f"no report until every run is complete ({len(left)} left: srdd study status {args.runs})")
    else:
        _final_report(args.runs, report_dir, rebuild=tally.ran > 0)
    return 0 if tally.not_complete == 0 else 1


def _final_report(runs: Path, out: Path, *, rebuild: bool) -> None:
    """Write the study's report, or rewrite it when this call ran something; a directory there that is not
    a report is left alone."""
    if out.exists() and not (out / "report.json").is_file():
        print(f"report not written: {out} exists and holds no report.json (choose --report-dir)")
        return
    if out.exists() and not rebuild:
        print(f"every run is complete; report {out} is up to date (srdd study report {runs} -o {out} --force "
              "rebuilds it)")
        return
    print(f"every run is complete: srdd correlate {runs} -o {out}", flush=True)
    correlate(runs, out, force=out.exists())
