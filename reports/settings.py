"""A study's analysis settings: which analysis, and the smallest effect of interest (the TOST margin).

Declared settings win: the command line, then the study's own record (`RUNS/_study/study.json`
keys `analysis` and `margin_pp`, written when a study is pre-registered). Otherwise the analysis
is chosen from the design (reports.verdicts.choose_method) and the margin is the suite's target -
baseline accuracy gap where `suite.json` has one, else 5 pp. A margin is never below one test
problem (100/m pp): no study can tell apart two accuracies closer than that.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from reports.compare import Method
from reports.verdicts import AUTO, DEFAULT_MARGIN, VerdictSettings
from srdd.errors import SrddError

ANALYSES = (AUTO, *(m.value for m in Method))


@dataclass(frozen=True)
class Resolved:
    settings: VerdictSettings
    margin_source: str
    analysis_source: str


def _read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _suite_gap(runs: Path, study: dict) -> float | None:
    """target - baseline accuracy of the study's suite (its thresholds), in pp, when it records both."""
    candidates = [Path(study["suite"])] if isinstance(study.get("suite"), str) else []
    candidates.append(runs.parent / "suite")
    for suite in candidates:
        doc = _read_json(suite / "suite.json")
        if doc:
            t = doc.get("thresholds") or {}
            base, target = t.get("baseline_acc"), t.get("target_acc")
            if all(isinstance(v, (int, float)) and math.isfinite(v) for v in (base, target)) and target != base:
                return 100 * abs(target - base)
            return None
    return None


def resolve(runs: Path, *, analysis: str | None, margin_pp: float | None, test_size: int | None) -> Resolved:
    """The settings `srdd correlate RUNS` uses, and where each came from (shown in the report)."""
    study = _read_json(runs / "_study" / "study.json")
    floor = 100 / test_size if test_size else 0.0
    if analysis is not None:
        analysis_source = "--analysis"
    elif study.get("analysis") is not None:
        analysis, analysis_source = str(study["analysis"]), "the study's settings (_study/study.json)"
    else:
        analysis, analysis_source = AUTO, "default"
    if analysis not in ANALYSES:
        raise SrddError(f"analysis {analysis!r} ({analysis_source}) is not one of {', '.join(ANALYSES)}")
    declared = [(margin_pp, "--margin"), (study.get("margin_pp"), "the study's settings (_study/study.json)")]
    given = next(((v, where) for v, where in declared if v is not None), None)
    if given is not None:
        value, source = given
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 100:
            raise SrddError(f"margin {value!r} pp ({source}) must be a number of percentage points in (0, 100)")
        if value < floor:
            raise SrddError(f"margin {value:g} pp ({source}) is below one test problem ({floor:.3g} pp at "
                            f"{test_size} problems): no study can resolve it")
    else:
        gap = _suite_gap(runs, study)
        value, source = ((gap, "the suite's target - baseline accuracy gap") if gap is not None else
                         (100 * DEFAULT_MARGIN, "the default, as the suite records no target - baseline gap"))
        if value < floor:
            value, source = floor, f"one test problem (100/{test_size} pp), raised from {source}"
    try:
        settings = VerdictSettings(analysis=analysis, margin=float(value) / 100)
    except ValueError as exc:
        raise SrddError(str(exc)) from None
    return Resolved(settings, source, analysis_source)
