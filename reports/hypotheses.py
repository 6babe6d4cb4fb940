"""Which hypotheses a report tests, and which of them form its confirmatory family.

The definitions come from the study's suite.json (`hypotheses`, written by `srdd calibrate --suite`), so
a suite keeps meaning what it meant when it was written: a hypothesis added to the code later (C1-C3)
changes no report of an older suite. A suite.json from before suites recorded hypotheses, or no suite at
all, reads as the hypotheses reports have always tested (calibrate.suite.HYPOTHESES).

A study may declare its confirmatory family before its first run (`srdd study run --hypotheses
C1,C2,C3`, recorded in RUNS/_study/study.json): any hypothesis its suite defines, or one the code
defines that the suite does not (so an older pilot can be planned for, or declared with, C1-C3). Holm's
adjustment then runs across the declared family alone, and every other hypothesis is exploratory.
Without a declaration every hypothesis of the suite is one family, as it always was.
"""

from __future__ import annotations

from collections.abc import Sequence

from calibrate.suite import HYPOTHESES, SUITE_HYPOTHESES, Hypothesis
from srdd.errors import SrddError

CONFIRMATORY, EXPLORATORY = "confirmatory", "exploratory"
"""A hypothesis' family in a report that declares one (the row's `family`)."""


def defined(suite: dict | None, where: str) -> tuple[Hypothesis, ...]:
    """The suite's own hypotheses, in its order; HYPOTHESES when it records none (or there is no suite)."""
    if not suite or "hypotheses" not in suite:
        return HYPOTHESES
    docs = suite["hypotheses"]
    if not isinstance(docs, list):
        raise SrddError(f"{where}: 'hypotheses' is a {type(docs).__name__}, not a list")
    out = tuple(Hypothesis.from_dict(doc, where) for doc in docs)
    keys = [h.key for h in out]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise SrddError(f"{where}: hypothesis {', '.join(twice)} is defined twice")
    return out


def available(suite_hypotheses: Sequence[Hypothesis]) -> dict[str, Hypothesis]:
    """What a study may declare: the suite's hypotheses, then the code's that the suite does not define."""
    out = {h.key: h for h in suite_hypotheses}
    return out | {h.key: h for h in SUITE_HYPOTHESES if h.key not in out}


def parse_keys(text: str, flag: str = "--hypotheses") -> tuple[str, ...]:
    """`C1,C2, C3` as keys; empty items and repeats refused (a family names each hypothesis once)."""
    keys = tuple(k.strip() for k in text.split(","))
    if not all(keys) or len(set(keys)) != len(keys):
        raise SrddError(f"{flag} {text!r}: comma-separated hypothesis keys, each once, e.g. C1,C2,C3")
    return keys


def pick_family(keys: Sequence[object], suite_hypotheses: Sequence[Hypothesis], source: str) -> tuple[Hypothesis, ...]:
    """The declared family in a fixed order (the suite's, then the code's): the same keys in another order
    are the same family. Keys that name no hypothesis are refused, by name."""
    known = available(suite_hypotheses)
    if (not isinstance(keys, (list, tuple)) or not keys or not all(isinstance(k, str) for k in keys)
            or len(set(keys)) != len(keys)):
        raise SrddError(f"{source}: a family is a list of distinct hypothesis keys, got {str(keys)[:80]}")
    unknown = [k[:40] for k in keys if k not in known]
    if unknown:
        raise SrddError(f"{source}: unknown {', '.join(unknown)} (the hypotheses here: {', '.join(known)})")
    return tuple(h for key, h in known.items() if key in keys)


def reported(suite_hypotheses: Sequence[Hypothesis], declared: Sequence[Hypothesis]) -> tuple[Hypothesis, ...]:
    """Every hypothesis a report tests: the suite's, and a declared one the suite does not define."""
    keys = {h.key for h in suite_hypotheses}
    return (*suite_hypotheses, *(h for h in declared if h.key not in keys))


def from_options(options: dict) -> tuple[Hypothesis, ...]:
    """The hypotheses a report tested, from its `options` (reports.build records them unless they are
    HYPOTHESES): how tests/studies rebuilds a committed report."""
    docs = options.get("hypotheses")
    return HYPOTHESES if docs is None else tuple(Hypothesis.from_dict(d, "report options") for d in docs)
