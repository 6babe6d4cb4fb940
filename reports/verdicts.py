"""Verdicts on the suite's hypotheses: tested across seeds, family-wise error controlled.

A hypothesis (calibrate.suite.HYPOTHESES, the same list `srdd calibrate --suite`
writes into plan.md) compares a treatment arm with a control arm by their final
accuracies, seeds as replicates (reports.compare). Across the hypotheses tested in
one report, p-values are Holm-adjusted. A verdict is

- "supported" / "refuted": >= 3 seeds per arm and Holm-adjusted p < alpha, by sign;
- "equivalent within ±m": >= 3 seeds per arm, no difference found, and the
  Holm-adjusted TOST p < alpha (the plan's "similar" outcome);
- "inconclusive": anything else, with the reason and the smallest difference the
  arms could have detected at 80 % power (at the Holm family's strictest level);
- "not tested": an arm is missing.

Arms whose configs differ in more than the hypothesis is about are confounded:
"inconclusive", listed, and kept out of the family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from calibrate.suite import HYPOTHESES, Hypothesis
import numpy as np

from reports.compare import (ALPHA, MIN_SEEDS, POWER, Comparison, Method, compare, detectable_effect,
                             equivalence_p, finite_or_none, holm)
from reports.runs import Group, config_diff

DEFAULT_MARGIN = 0.005
"""The plan's "similar" (~±0.5 % accuracy), as a fraction."""


@dataclass(frozen=True)
class VerdictSettings:
    test: Method = Method.WELCH
    alpha: float = ALPHA
    margin: float = DEFAULT_MARGIN
    min_seeds: int = MIN_SEEDS

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", Method(self.test))
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0 < self.margin < 1:
            raise ValueError(f"equivalence margin must be in (0, 1) (a fraction of accuracy), got {self.margin}")
        if self.min_seeds < 2:
            raise ValueError(f"min_seeds must be >= 2, got {self.min_seeds}")


SUPPORTED, REFUTED, EQUIVALENT, INCONCLUSIVE = 1, -1, 2, 0
"""Verdict codes of `verdict_codes` (arrays, for simulations and for the report alike)."""


def verdict_codes(comparison: Comparison, p_holm: np.ndarray, tost_holm: np.ndarray,
                  settings: VerdictSettings) -> np.ndarray:
    """The decision rule itself, elementwise: the one place a verdict is decided."""
    enough = min(comparison.n_treatment, comparison.n_control) >= settings.min_seeds
    found = enough & (p_holm < settings.alpha)
    equivalent = enough & ~found & (tost_holm < settings.alpha)
    sign = np.where(comparison.difference > 0, SUPPORTED, REFUTED)
    return np.where(found, sign, np.where(equivalent, EQUIVALENT, INCONCLUSIVE))


def simulate_family(treatment: np.ndarray, control: np.ndarray,
                    settings: VerdictSettings = VerdictSettings()) -> np.ndarray:
    """Verdict codes for a batch of simulated reports: arrays [draws, hypotheses, seeds] -> [draws, hypotheses].

    The same tests, Holm family and rule as `assess_family`, vectorized so thousands of
    simulated studies take seconds (tests/reports check error rates and power with it).
    """
    comparison = compare(treatment, control, settings.test)
    tost = equivalence_p(treatment, control, settings.margin)
    return verdict_codes(comparison, holm(comparison.p), holm(tost), settings)


def assess_family(pairs: Sequence[tuple[Sequence[float], Sequence[float]]],
                  settings: VerdictSettings = VerdictSettings()) -> list[dict]:
    """Verdict and statistics for each (treatment accuracies, control accuracies) of one report.

    The pairs are the family: Holm's adjustment runs over their difference p-values,
    and separately over their equivalence p-values.
    """
    comparisons = [compare(t, c, settings.test) for t, c in pairs]
    tost = np.array([equivalence_p(t, c, settings.margin) for t, c in pairs], float)
    p_holm = holm(np.array([c.p for c in comparisons], float))
    tost_holm = holm(tost)
    family = int(sum(not np.isnan(c.p) for c in comparisons))
    strictest = settings.alpha / max(family, 1)
    out = []
    for i, c in enumerate(comparisons):
        mde = detectable_effect(finite_or_none(c.sd_treatment), finite_or_none(c.sd_control), c.n_treatment,
                                c.n_control, alpha=strictest)
        code = int(verdict_codes(c, p_holm[i], tost_holm[i], settings))
        row = {**c.to_dict(), "p_holm": finite_or_none(p_holm[i]), "p_equivalence": finite_or_none(tost[i]),
               "p_equivalence_holm": finite_or_none(tost_holm[i]), "equivalence_margin": settings.margin,
               "detectable_effect": mde, "detectable_effect_alpha": strictest, "detectable_effect_power": POWER,
               "alpha": settings.alpha, "family_size": family}
        out.append({"verdict": _VERDICT_NAMES[code].format(m=settings.margin), "reason": _reason(row, code, settings),
                    **row})
    return out


_VERDICT_NAMES = {SUPPORTED: "supported", REFUTED: "refuted", EQUIVALENT: "equivalent within ±{m:g}",
                  INCONCLUSIVE: "inconclusive"}


def _reason(row: dict, code: int, settings: VerdictSettings) -> str:
    if row["p"] is None:
        return row["note"] or "the test is undefined"
    label = Method(row["test"]).label
    stats = (f"difference {row['difference']:+.4f} (95% CI [{row['ci95'][0]:+.4f}, {row['ci95'][1]:+.4f}]), "
             f"{label} p = {row['p']:.3g}, Holm-adjusted p = {row['p_holm']:.3g}")
    mde = row["detectable_effect"]
    detect = ("" if mde is None else
              f"; with this spread only |difference| >= {mde:.4f} would be found with {POWER:.0%} power")
    if code in (SUPPORTED, REFUTED):
        return f"{stats} < {settings.alpha}"
    if code == EQUIVALENT:
        return (f"{stats}; TOST Holm-adjusted p = {row['p_equivalence_holm']:.3g} < {settings.alpha} for a margin "
                f"of ±{settings.margin:g}")
    if min(row["n_treatment"], row["n_control"]) < settings.min_seeds:
        return (f"{row['n_treatment']} vs {row['n_control']} seeds: a finding needs >= {settings.min_seeds} per "
                f"arm; {stats}{detect}")
    return f"{stats} >= {settings.alpha}{detect}"


def find_group(groups: list[Group], arm: str) -> Group | None:
    """The group named `arm` (runs `<arm>-s<seed>`), else the one group whose name contains it."""
    exact = [g for g in groups if g.name == arm]
    if exact:
        return exact[0]
    hits = [g for g in groups if arm.lower() in g.name.lower()]
    return hits[0] if len(hits) == 1 else None


def verdicts(groups: list[Group], settings: VerdictSettings = VerdictSettings(),
             hypotheses: Sequence[Hypothesis] = HYPOTHESES) -> list[dict]:
    """One verdict per hypothesis; the testable ones form the Holm family."""
    rows: list[dict] = []
    family: list[tuple[int, Group, Group]] = []
    for h in hypotheses:
        treat, ctrl = find_group(groups, h.treatment), find_group(groups, h.control)
        row = {"hypothesis": h.key, "question": h.question, "treatment": treat.name if treat else None,
               "control": ctrl.name if ctrl else None}
        rows.append(row)
        if treat is None or ctrl is None or treat is ctrl:
            row.update(verdict="not tested", reason=f"needs runs named {h.treatment}-s<seed> and {h.control}-s<seed>")
            continue
        confounds = [k for k in config_diff(treat.config, ctrl.config) if not k.startswith(h.differs_in)]
        if confounds:
            row.update(verdict="inconclusive", n_treatment=treat.n, n_control=ctrl.n,
                       difference=treat.mean - ctrl.mean,
                       reason=f"confound: the configs also differ in {confounds} (left out of the test family)")
            continue
        family.append((len(rows) - 1, treat, ctrl))
    assessed = assess_family([(t.accuracies, c.accuracies) for _, t, c in family], settings)
    for (index, _, _), result in zip(family, assessed):
        rows[index].update(result)
    return rows
