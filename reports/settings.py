"""A study's analysis settings: which analysis, the smallest effect of interest (the TOST margin), and
which hypotheses are tested, in which family.

Declared settings win: the command line, then the study's own record (`RUNS/_study/study.json`
keys `analysis`, `margin_pp` and `hypotheses`, written when a study is pre-registered). Otherwise the
analysis is chosen from the design (reports.verdicts.choose_method), the margin is the suite's target -
baseline accuracy gap where `suite.json` has one, else 5 pp, and every hypothesis of the suite is one
family (reports.hypotheses). A margin is never below one test problem (100/m pp): no study can tell
apart two accuracies closer than that.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from calibrate.suite import HYPOTHESES, Hypothesis
from reports.hypotheses import defined, pick_family, reported
from reports.compare import Method
from reports.verdicts import AUTO, DEFAULT_MARGIN, VerdictSettings
from srdd.errors import SrddError

ANALYSES = (AUTO, *(m.value for m in Method))
STUDY_SOURCE = "the study's settings (_study/study.json)"


@dataclass(frozen=True)
class Resolved:
    settings: VerdictSettings
    margin_source: str
    analysis_source: str
    hypotheses: tuple[Hypothesis, ...] = HYPOTHESES
    """Every hypothesis the report tests (the suite's, and a declared one it does not define)."""
    family_source: str | None = None
    """Where the confirmatory family (settings.confirmatory) was declared; None: it was not."""


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def study_record(runs: Path) -> dict:
    """RUNS/_study/study.json, or {} where there is none (runs not made by `srdd study run`)."""
    return _read_json(runs / "_study" / "study.json")


def study_suite(runs: Path, study: dict) -> tuple[dict, str]:
    """The study's suite.json and where it is: the suite study.json names (a path relative to RUNS/_study,
    where study.json lies), else RUNS/../suite; ({}, "no suite.json") when neither holds one."""
    candidates = [runs / "_study" / study["suite"]] if isinstance(study.get("suite"), str) else []
    candidates.append(runs.parent / "suite")
    for suite in candidates:
        doc = _read_json(suite / "suite.json")
        if doc:
            return doc, str(suite / "suite.json")
    return {}, "no suite.json"


def _suite_gap(suite: dict) -> float | None:
    """target - baseline accuracy of the study's suite (its thresholds), in pp, when it records both."""
    t = suite.get("thresholds") or {}
    base, target = t.get("baseline_acc"), t.get("target_acc")
    if all(isinstance(v, (int, float)) and math.isfinite(v) for v in (base, target)) and target != base:
        return 100 * abs(target - base)
    return None


def declared_family(runs: Path, keys: Sequence[str] | None = None
                    ) -> tuple[tuple[Hypothesis, ...], tuple[Hypothesis, ...] | None, str | None]:
    """The suite's hypotheses, the declared confirmatory family (`keys` from the command line, else the
    study's record; None when neither declares one), and where it was declared."""
    study = study_record(runs)
    suite, where = study_suite(runs, study)
    own = defined(suite, where)
    for value, source in ((keys, "--hypotheses"), (study.get("hypotheses"), STUDY_SOURCE)):
        if value is not None:
            return own, pick_family(value, own, source), source
    return own, None, None


def resolve(runs: Path, *, analysis: str | None, margin_pp: float | None, test_size: int | None,
            hypotheses: Sequence[str] | None = None) -> Resolved:
    """The settings `srdd correlate RUNS` uses, and where each came from (shown in the report)."""
    study = study_record(runs)
    floor = 100 / test_size if test_size else 0.0
    if analysis is not None:
        analysis_source = "--analysis"
    elif study.get("analysis") is not None:
        analysis, analysis_source = str(study["analysis"]), STUDY_SOURCE
    else:
        analysis, analysis_source = AUTO, "default"
    if analysis not in ANALYSES:
        raise SrddError(f"analysis {analysis!r} ({analysis_source}) is not one of {', '.join(ANALYSES)}")
    declared = [(margin_pp, "--margin"), (study.get("margin_pp"), STUDY_SOURCE)]
    given = next(((v, where) for v, where in declared if v is not None), None)
    if given is not None:
        value, source = given
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 100:
            raise SrddError(f"margin {value!r} pp ({source}) must be a number of percentage points in (0, 100)")
        if value < floor:
            raise SrddError(f"margin {value:g} pp ({source}) is below one test problem ({floor:.3g} pp at "
                            f"{test_size} problems): no study can resolve it")
    else:
        gap = _suite_gap(study_suite(runs, study)[0])
        value, source = ((gap, "the suite's target - baseline accuracy gap") if gap is not None else
                         (100 * DEFAULT_MARGIN, "the default, as the suite records no target - baseline gap"))
        if value < floor:
            value, source = floor, f"one test problem (100/{test_size} pp), raised from {source}"
    own, declared_hypotheses, family_source = declared_family(runs, hypotheses)
    confirmatory = None if declared_hypotheses is None else tuple(h.key for h in declared_hypotheses)
    try:
        settings = VerdictSettings(analysis=analysis, margin=float(value) / 100, confirmatory=confirmatory)
    except ValueError as exc:
        raise SrddError(str(exc)) from None
    return Resolved(settings, source, analysis_source, reported(own, declared_hypotheses or ()), family_source)
