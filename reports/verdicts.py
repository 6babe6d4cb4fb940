"""Verdicts for the study's hypotheses, refusing to call single-seed or confounded differences.

A hypothesis compares a treatment group with a control group, both found by
the experiment names `srdd calibrate --suite` writes. It is "supported" or
"refuted" only when both sides have at least two seeds, the difference of
means exceeds their combined seed spread, and the configs differ only in the
keys the hypothesis is about; otherwise "inconclusive", with the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from reports.runs import Group, config_diff

COMMON_IGNORED = ("seed", "name")


@dataclass(frozen=True)
class Hypothesis:
    key: str
    question: str
    treatment: str
    control: str
    keys: tuple[str, ...]  # config keys the comparison is allowed to differ in


HYPOTHESES = (
    Hypothesis("H1", "global noise beats noise targeted at the high-error zone", "baseline", "targeted",
               ("noise.target_layers",)),
    Hypothesis("H2", "higher sigma in the high-error zone beats lower", "E13i-high", "E13i-low",
               ("noise.zone_overrides",)),
    Hypothesis("H3", "scan-guided per-layer multipliers beat uniform sigma", "variable", "baseline",
               ("noise.layer_multipliers", "noise.multipliers_file")),
    Hypothesis("H4", "a decaying schedule beats constant sigma", "baseline", "constant",
               ("noise.schedule", "noise.sigma_start", "noise.sigma_end", "noise.num_stages")),
    Hypothesis("H5", "noise on RMSNorm weights beats noise on linear weights", "rmsnorm", "baseline",
               ("noise.targets", "noise.sigma_mode")),
)


def _find(groups: list[Group], token: str) -> Group | None:
    hits = [g for g in groups if token.lower() in g.name.lower()]
    return hits[0] if len(hits) == 1 else None


def verdict(h: Hypothesis, groups: list[Group], baseline: Group | None) -> dict:
    treat = baseline if h.treatment == "baseline" else _find(groups, h.treatment)
    ctrl = baseline if h.control == "baseline" else _find(groups, h.control)
    out = {"hypothesis": h.key, "question": h.question, "treatment": treat.name if treat else None,
           "control": ctrl.name if ctrl else None}
    if treat is None or ctrl is None or treat is ctrl:
        return {**out, "verdict": "not tested", "reason": f"needs runs named *{h.treatment}* and *{h.control}*"}
    delta = treat.mean - ctrl.mean
    spread = math.sqrt(treat.std**2 + ctrl.std**2)
    out.update(delta=delta, spread=spread, n_treatment=treat.n, n_control=ctrl.n)
    confounds = [k for k in config_diff(treat.config, ctrl.config) if not k.startswith(h.keys)]
    if confounds:
        return {**out, "verdict": "inconclusive", "reason": f"confound: configs also differ in {confounds}"}
    if min(treat.n, ctrl.n) < 2:
        return {**out, "verdict": "inconclusive", "reason": "single seed on one side: no spread to judge by"}
    if abs(delta) <= spread:
        return {**out, "verdict": "inconclusive", "reason": f"|difference| {abs(delta):.4f} is inside the "
                                                            f"seed spread {spread:.4f}"}
    return {**out, "verdict": "supported" if delta > 0 else "refuted",
            "reason": f"difference {delta:+.4f} exceeds the seed spread {spread:.4f}"}
