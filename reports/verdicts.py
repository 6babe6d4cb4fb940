"""Verdicts on the suite's hypotheses: tested across seeds, family-wise error controlled.

A hypothesis (the suite's, reports.hypotheses: what `srdd calibrate --suite` writes
into suite.json and plan.md) compares a treatment arm with a control arm by their final
accuracies, seeds as replicates. The hypotheses tested in one report are a family; a
study that declares a confirmatory family has two, the declared one and the rest
(exploratory), each adjusted on its own, so the exploratory tests cost the declared
ones nothing.
When every arm of the family ran the same seeds (complete blocks) the family is
analysed in the arm + seed model (reports.blocked), else pair by pair with Welch's
t-test, and the report says which and why. Across the family, p-values are
Holm-adjusted. A verdict is

- "supported" / "refuted": >= 3 seeds per arm and Holm-adjusted p < alpha, by sign;
- "equivalent within ±m pp": >= 3 seeds per arm, no difference found, and the
  Holm-adjusted TOST p < alpha, m the study's smallest effect of interest;
- "inconclusive": anything else, with the reason and the smallest difference the
  analysis could have detected at 80 % power (at the Holm family's strictest level);
- "not tested": an arm is missing.

Arms whose configs differ in more than the hypothesis is about are confounded:
"inconclusive", listed, and kept out of the family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from calibrate.suite import HYPOTHESES, Hypothesis
import numpy as np

from reports.hypotheses import CONFIRMATORY, EXPLORATORY

from reports.blocked import arm_variances, compare_blocked, heterogeneity, pooled_variance
from reports.compare import (ALPHA, MIN_SEEDS, POWER, Comparison, Method, compare, equivalence_p, finite_or_none,
                             holm, stack)
from reports.power import detectable_for_report
from reports.runs import Group, config_diff

AUTO = "auto"
"""The default analysis: the arm + seed model with per-arm variances when the family's blocks are complete,
else Welch's t-test."""
DEFAULT_MARGIN = 0.05
"""Smallest effect of interest when the suite gives no target - baseline gap: 5 pp (as a fraction)."""


@dataclass(frozen=True)
class VerdictSettings:
    analysis: str = AUTO
    alpha: float = ALPHA
    margin: float = DEFAULT_MARGIN
    """Equivalence margin (TOST) = the study's smallest effect of interest, a fraction of accuracy."""
    min_seeds: int = MIN_SEEDS
    confirmatory: tuple[str, ...] | None = None
    """The declared confirmatory family (hypothesis keys); None: every hypothesis is one family."""

    def __post_init__(self) -> None:
        if self.confirmatory is not None and not self.confirmatory:
            raise ValueError("a declared confirmatory family names at least one hypothesis")
        if self.analysis != AUTO:
            object.__setattr__(self, "analysis", Method(self.analysis).value)
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0 < self.margin < 1:
            raise ValueError(f"equivalence margin must be in (0, 100) pp, got {100 * self.margin:g} pp")
        if self.min_seeds < 2:
            raise ValueError(f"min_seeds must be >= 2, got {self.min_seeds}")

    @classmethod
    def from_options(cls, options: dict) -> VerdictSettings:
        """The settings a report recorded in its `options` (how tests/studies rebuilds a committed report)."""
        declared = options.get("confirmatory")  # absent from reports of undeclared studies
        return cls(analysis=options["analysis"], margin=options["margin_pp"] / 100,
                   confirmatory=None if declared is None else tuple(declared))


SUPPORTED, REFUTED, EQUIVALENT, INCONCLUSIVE = 1, -1, 2, 0
"""Verdict codes of `verdict_codes` (arrays, for simulations and for the report alike)."""


def verdict_codes(comparison: Comparison, p_holm: np.ndarray, tost_holm: np.ndarray,
                  settings: VerdictSettings) -> np.ndarray:
    """The decision rule itself, elementwise: the one place a verdict is decided."""
    enough = np.minimum(comparison.n_treatment, comparison.n_control) >= settings.min_seeds
    found = enough & (p_holm < settings.alpha)
    equivalent = enough & ~found & (tost_holm < settings.alpha)
    sign = np.where(comparison.difference > 0, SUPPORTED, REFUTED)
    return np.where(found, sign, np.where(equivalent, EQUIVALENT, INCONCLUSIVE))


def choose_method(seeds: Sequence[Sequence[int]], analysis: str) -> tuple[Method, str]:
    """The family's analysis and why: blocked (or a declared pooled) only with complete blocks."""
    sets = [tuple(sorted(s)) for s in seeds]
    complete = (len(set(sets)) == 1 and len(sets[0]) >= 2 and len(set(sets[0])) == len(sets[0])
                and len(sets) >= 2)
    if analysis in (Method.WELCH.value, Method.PERMUTATION.value):
        return Method(analysis), "declared"
    if not complete:
        shown = "; ".join(sorted({", ".join(map(str, s)) or "none" for s in sets}))
        return Method.WELCH, (f"incomplete blocks (the family's arms ran different seeds: {shown}), so the arms "
                              "are compared pair by pair with Welch's t-test")
    method = Method.BLOCKED if analysis == AUTO else Method(analysis)
    why = f"complete blocks: every arm of the family ran seeds {', '.join(map(str, sets[0]))}"
    return method, why + ("" if analysis == AUTO else "; the pooled variance is the study's declared choice")


@dataclass(frozen=True)
class Decision:
    """The family's tests and verdict codes, arrays [..., contrast] (a batch of simulated studies or one report)."""

    method: Method
    why: str
    comparison: Comparison
    tost: np.ndarray
    p_holm: np.ndarray
    tost_holm: np.ndarray
    codes: np.ndarray


def decide(arms: Sequence, seeds: Sequence[Sequence[int]], pairs: Sequence[tuple[int, int]],
           settings: VerdictSettings = VerdictSettings(), method: Method | None = None) -> Decision:
    """Test a family and decide its verdicts: what `srdd correlate` does with the runs, and what simulations run.

    arms[a] holds arm a's final accuracies [..., run] in the order of seeds[a]; leading axes are a batch of
    studies. pairs are (treatment, control) arm indices, one per hypothesis. `method` overrides the choice
    (the sensitivity analysis beside a declared pooled variance).
    """
    chosen, why = choose_method(seeds, settings.analysis)
    if method is not None:
        chosen, why = Method(method), f"sensitivity analysis beside the declared one ({why})"
    if chosen in (Method.BLOCKED, Method.POOLED):
        order = [np.argsort(s) for s in seeds]
        y = np.stack([np.asarray(a, float)[..., o] for a, o in zip(arms, order)], axis=-2)
        comparison = compare_blocked(y, pairs, chosen)
    else:
        comparison = stack([compare(arms[t], arms[c], chosen) for t, c in pairs])
    tost = equivalence_p(comparison, settings.margin)
    p_holm, tost_holm = holm(comparison.p), holm(tost)
    return Decision(chosen, why, comparison, tost, p_holm, tost_holm,
                    verdict_codes(comparison, p_holm, tost_holm, settings))


def assess_family(arms: Sequence[Sequence[float]], seeds: Sequence[Sequence[int]],
                  pairs: Sequence[tuple[int, int]], settings: VerdictSettings = VerdictSettings(),
                  method: Method | None = None) -> tuple[list[dict], dict]:
    """Verdict and statistics per pair of one report, and the analysis that made them.

    The pairs are the family: Holm's adjustment runs over their difference p-values, and separately over
    their equivalence p-values.
    """
    d = decide(arms, seeds, pairs, settings, method)
    family = int(np.sum(~np.isnan(d.comparison.p)))
    strictest = settings.alpha / max(family, 1)
    mdes, how = _detectable(d.method, arms, seeds, pairs, strictest)
    out = []
    for i in range(len(pairs)):
        c = d.comparison.pick(i)
        code = int(d.codes[i])
        row = {**c.to_dict(), "p_holm": finite_or_none(d.p_holm[i]), "p_equivalence": finite_or_none(d.tost[i]),
               "p_equivalence_holm": finite_or_none(d.tost_holm[i]), "equivalence_margin_pp": 100 * settings.margin,
               "detectable_effect": mdes[i], "detectable_effect_alpha": strictest, "detectable_effect_power": POWER,
               "alpha": settings.alpha, "family_size": family}
        out.append({"verdict": _VERDICT_NAMES[code].format(m=100 * settings.margin),
                    "reason": _reason(row, code, settings), **row})
    analysis = {"method": d.method.value, "name": d.method.label, "why": d.why, "detectable_effect": how}
    if d.method is Method.POOLED:
        analysis["heterogeneity"] = heterogeneity(_blocks(arms, seeds))
    return out, analysis


def _blocks(arms, seeds) -> np.ndarray:
    return np.stack([np.asarray(a, float)[np.argsort(s)] for a, s in zip(arms, seeds)])


def _detectable(method: Method, arms, seeds, pairs, alpha: float) -> tuple[list[float | None], str]:
    """Detectable |difference| per pair from the observed spreads, as the family's analysis computes them."""
    if method in (Method.BLOCKED, Method.POOLED):
        y = _blocks(arms, seeds)
        variance, df = pooled_variance(y)
        return detectable_for_report(method, arm_variances(y), y.shape[1], pairs, alpha,
                                     pooled=(float(variance), df))
    counts = [len(a) for a in arms]
    variances = [float(np.var(a, ddof=1)) if len(a) > 1 else 0.0 for a in arms]
    return detectable_for_report(method, np.array(variances), counts, pairs, alpha)


_VERDICT_NAMES = {SUPPORTED: "supported", REFUTED: "refuted", EQUIVALENT: "equivalent within ±{m:g} pp",
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
                f"of ±{100 * settings.margin:g} pp")
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


def seeds_of(group: Group) -> list[int]:
    """The seed of each run of a group, in the group's run order (run.json's config.seed)."""
    return [int(r.config.get("seed", -1)) for r in group.runs]


def verdicts(groups: list[Group], settings: VerdictSettings = VerdictSettings(),
             hypotheses: Sequence[Hypothesis] = HYPOTHESES) -> tuple[list[dict], dict]:
    """One verdict per hypothesis, and the analysis that made them.

    Without a declared family the testable hypotheses form one Holm family. With one, the declared
    hypotheses come first and form the confirmatory family (its analysis is the one returned); the rest
    form an exploratory family of their own (under the analysis' `exploratory`), and every row says which
    `family` it belongs to.
    """
    if settings.confirmatory is None:
        return _family_verdicts(groups, settings, hypotheses)
    unknown = sorted(set(settings.confirmatory) - {h.key for h in hypotheses})
    if unknown:
        raise ValueError(f"the confirmatory family names {', '.join(unknown)}, which no hypothesis here defines")
    declared = [h for h in hypotheses if h.key in settings.confirmatory]
    rows, analysis = _family_verdicts(groups, settings, declared)
    rows = [{"hypothesis": r["hypothesis"], "family": CONFIRMATORY, **r} for r in rows]
    analysis["hypotheses"] = [h.key for h in declared]
    others = [h for h in hypotheses if h.key not in settings.confirmatory]
    if others:
        more, analysis[EXPLORATORY] = _family_verdicts(groups, settings, others)
        analysis[EXPLORATORY]["hypotheses"] = [h.key for h in others]
        rows += [{"hypothesis": r["hypothesis"], "family": EXPLORATORY, **r} for r in more]
    return rows, analysis


def _family_verdicts(groups: list[Group], settings: VerdictSettings,
                     hypotheses: Sequence[Hypothesis]) -> tuple[list[dict], dict]:
    """One family: the testable hypotheses are adjusted together.

    A declared pooled variance comes with its heterogeneity check and, under `sensitivity`, the verdicts of the
    per-arm analysis beside it.
    """
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
    if not family:
        return rows, {"method": None, "name": None, "why": "no hypothesis is testable here", "detectable_effect": None}
    arms = list(dict.fromkeys(g.name for _, t, c in family for g in (t, c)))
    by_name = {g.name: g for g in groups}
    pairs = [(arms.index(t.name), arms.index(c.name)) for _, t, c in family]
    accuracies = [by_name[a].accuracies for a in arms]
    seeds = [seeds_of(by_name[a]) for a in arms]
    assessed, analysis = assess_family(accuracies, seeds, pairs, settings)
    for (index, _, _), result in zip(family, assessed):
        rows[index].update(result)
    analysis["arms"] = arms
    if analysis["method"] == Method.POOLED.value:
        robust, _ = assess_family(accuracies, seeds, pairs, settings, Method.BLOCKED)
        analysis["sensitivity"] = [{k: rows[i][k] for k in ("hypothesis", "treatment", "control")} | r
                                   for (i, _, _), r in zip(family, robust)]
    return rows, analysis
