"""The variance components a study observed, beside the ones its power plan assumed.

A study sized by `srdd study plan` bets on its pilot's variance components (reports.plan): the seed
block, each arm's run-to-run residual, and the part of it that more test problems remove. When a
confirmatory verdict comes out inconclusive, the report must show whether the design failed or the
bet did: a run sd twice the planned one halves the detectable effect's reach, and no amount of
hoping changes that. So a report of a declared confirmatory family estimates the same components
from the study's own runs, the way the planner estimated them from the pilot, and with `--plan`
sets the plan's beside them at the study's test-set size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from calibrate.suite import Hypothesis
from reports.plan import Components, estimate
from reports.runs import RunRecord
from srdd.errors import SrddError

PLAN_SCHEMA = "srdd.plan/v1"


def load_plan(path: Path) -> dict:
    """A plan `srdd study plan --json` wrote (one pilot, not a comparison of designs)."""
    try:
        plan = json.loads(path.read_text())
    except FileNotFoundError:
        raise SrddError(f"--plan {path}: no such file (write it with srdd study plan ... --json > {path})") from None
    except (OSError, ValueError) as exc:
        raise SrddError(f"--plan {path}: not a readable JSON file ({exc})") from None
    if not isinstance(plan, dict) or plan.get("schema") != PLAN_SCHEMA:
        what = plan.get("schema") if isinstance(plan, dict) else type(plan).__name__
        raise SrddError(f"--plan {path}: expected a {PLAN_SCHEMA} plan (srdd study plan RUNS --json), got {what}")
    return plan


def observed(runs: list[RunRecord], family: Sequence[Hypothesis]) -> dict | None:
    """The family's components from the study's own runs (None: its arms are not complete seed blocks, so
    there is no seed block to separate)."""
    try:
        components, _, _ = estimate(runs, family)
    except SrddError:
        return None
    return asdict(components)


def planned(plan: dict, test_size: int) -> dict:
    """The plan's components as they would be at `test_size` problems, per problem-part scenario it planned."""
    c = Components(**plan["components"])
    scenarios = ([("measured", True)] if c.problem_measured
                 else [("problem part at its bound", True), ("no problem part", False)])
    return {"pilot": plan["pilot"], "effect_pp": plan["effect_pp"], "hypotheses": plan["hypotheses"],
            "pilot_test_size": c.test_size, "seed_variance": c.seed_variance,
            "run_variance": {name: dict(zip(c.arms, map(float, c.variances(test_size, part))))
                             for name, part in scenarios},
            "designs": [d for d in plan["designs"] if d["test_size"] == test_size]}


def components_section(runs: list[RunRecord], family: Sequence[Hypothesis], plan: dict | None) -> dict | None:
    """report.json's `variance_components`: observed, and the plan's at the study's test-set size."""
    seen = observed(runs, family)
    if seen is None:
        return None if plan is None else {"observed": None, "planned": None,
                                          "note": "the family's arms are not complete seed blocks: nothing to set "
                                                  "beside the plan"}
    out = {"observed": seen, "note": "variances in accuracy squared; sd = sqrt, shown in pp"}
    if plan is not None:
        out["planned"] = planned(plan, seen["test_size"])
    return out


def rows(section: dict) -> tuple[list[str], list[list[str]]]:
    """The table: each component's sd observed, and planned under each scenario the plan had."""
    seen, plan = section["observed"], section.get("planned")
    scenarios = list(plan["run_variance"]) if plan else []
    sd = lambda v: "—" if v is None else f"{100 * math.sqrt(v):.1f}"  # noqa: E731  variance -> sd in pp
    header = ["component", f"observed sd (pp, {seen['test_size']} problems, {len(seen['seeds'])} seeds)",
              *(f"planned sd (pp, {name})" for name in scenarios)]
    out = [["seed block (cancels in the arm + seed analysis)", sd(seen["seed_variance"]),
            *(sd(plan["seed_variance"]) for _ in scenarios)]]
    for arm in seen["arms"]:
        out.append([f"run residual, {arm}", sd(seen["residual"][arm]),
                    *(sd(plan["run_variance"][name].get(arm)) for name in scenarios)])
        out.append([f"  of it the problem part, {arm}", sd(seen["problem"][arm]), *([""] * len(scenarios))])
    return header, out
