"""Where a study's files live under RUNS_DIR, and the rules that keep every one of them there.

    <arm>-s<seed>/             one `srdd train` run directory per arm and seed; the -s<seed>
                               suffix is what `srdd correlate` groups seeds by
    _study/study.json          the settings (suite, seeds, --set, every arm's config and its sha256)
    _study/control.yaml        the control arm: the suite's baseline with noise.enabled false
    _study/attempts.jsonl      one line per child process: run, action, exit code, status, wall time
    _study/study.lock          held by the `srdd study run` in progress
    _failed/<name>-<stamp>/    failed runs moved aside by --retry-failed (never deleted)

Neither `_study` nor `_failed` holds a run.json, so `srdd correlate RUNS_DIR` never reads them.

Arm names come from a file anyone can edit (suite.json), and every one of them becomes a path:
they are checked once, when the suite is read, against a set that cannot name another directory
(`../x`, `/abs`), a hidden one (`.`), nothing at all, or a line break that would break a report.
Nothing the study writes or moves under RUNS_DIR is reached through a symlink (the rule run
directories already follow): a link there would append to, create or receive files elsewhere.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from calibrate.suite import CONTROL  # the suite's hypotheses C1, C2 name this arm
from srdd.errors import SrddError

STUDY_DIR = "_study"
FAILED_DIR = "_failed"
STUDY_FILES = ("study.json", "control.yaml", "attempts.jsonl", "study.lock")
MAX_ARM_NAME = 64
ARM_NAME = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{MAX_ARM_NAME - 1}}}")
"""ASCII letters, digits and `._-`, not starting with a dot: a single path component on every filesystem.
An all-digit name such as "5" is a name like any other; a JSON number 5 or null is not a name."""


def shown(value: object, limit: int = 80) -> str:
    """A value from an input file, quoted and cut short: an error line never carries a whole input."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def check_arm_names(names: Sequence[object], where: str) -> None:
    """Every arm name valid and distinct (also ignoring case: "A" and "a" share a directory on macOS)."""
    for name in names:
        if not isinstance(name, str) or not ARM_NAME.fullmatch(name):
            raise SrddError(f"{where}: arm name {shown(name)} is not allowed; a name is 1-{MAX_ARM_NAME} ASCII "
                            "letters, digits and ._- not starting with a dot (it names the arm's run directories)")
        if name == CONTROL:
            raise SrddError(f"{where}: an experiment is named {CONTROL!r}, the name of the study's no-noise arm")
    folded = [str(n).casefold() for n in names]
    twice = sorted({str(n) for n in names if folded.count(str(n).casefold()) > 1})
    if twice:
        raise SrddError(f"{where}: arm names must be distinct (also ignoring case), got {', '.join(twice)} twice")


def run_name(arm: str, seed: int) -> str:
    return f"{arm}-s{seed}"


def run_path(runs: Path, arm: str, seed: int) -> Path:
    """RUNS/<arm>-s<seed>, refused unless it is a direct child of RUNS (a checked name always is)."""
    path = runs / run_name(arm, seed)
    if path.parent != runs or path.name in ("", ".", ".."):
        raise SrddError(f"arm {shown(arm)}: run directory {path} would lie outside --runs {runs}")
    return path


def study_dir(runs: Path) -> Path:
    return runs / STUDY_DIR


def failed_dir(runs: Path) -> Path:
    return runs / FAILED_DIR


def step0_dir(runs: Path) -> Path:
    """The study's shared step-0 validations (rin_train.step0): a cache, never committed."""
    return study_dir(runs) / "step0"


def refuse_links(runs: Path) -> None:
    """Refuse RUNS when anything the study writes or moves into is a symlink (checked before any run)."""
    paths = [study_dir(runs), failed_dir(runs), step0_dir(runs), *(study_dir(runs) / f for f in STUDY_FILES)]
    links = [str(p.relative_to(runs)) for p in paths if p.is_symlink()]
    if links:
        raise SrddError(f"--runs {runs}: {', '.join(links)} is a symlink; a study never writes through a symlink "
                        "(replace it with the real file or directory)")


def check_report_dir(runs: Path, report_dir: Path | None, run_names: Sequence[str]) -> Path:
    """Where the finished study's report goes (default RUNS/../report), refused before any run when it
    lies inside RUNS (among the runs correlate reads) or holds something other than this study's report."""
    out = report_dir if report_dir is not None else runs.parent / "report"
    if not out.parent.is_dir():
        raise SrddError(f"--report-dir {out}: directory {out.parent} does not exist")
    real_runs, real_out = runs.resolve(), out.resolve()
    if real_out == real_runs or real_runs in real_out.parents or real_out in real_runs.parents:
        raise SrddError(f"--report-dir {out} overlaps --runs {runs}; give a directory beside the runs")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise SrddError(f"--report-dir {out} is a symlink or not a directory")
    if out.exists():
        try:
            doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
            names = {r["name"] for r in doc["runs"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SrddError(f"--report-dir {out} exists and holds no report of srdd correlate "
                            f"({type(exc).__name__}); choose another --report-dir") from None
        if not names <= set(run_names):
            raise SrddError(f"--report-dir {out} holds the report of other runs ({', '.join(sorted(names)[:3])}...); "
                            "choose another --report-dir")
    return out
