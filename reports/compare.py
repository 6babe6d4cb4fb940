"""Two-arm comparisons of final accuracies across seeds (DESIGN.md §3 "Statistics of a comparison").

The unit is the run: each seed is one replicate, layers never are. Every test is
scipy's; this module only chooses them, keeps their outputs together and says
what they mean:

- difference: Welch's t-test (`scipy.stats.ttest_ind(equal_var=False)`, unequal
  variances, Welch-Satterthwaite df) with its 95 % CI; or the exact permutation test
  of the difference of means (`scipy.stats.permutation_test`, every relabelling).
  The permutation test makes no normality assumption but, at 3 seeds per arm, has
  only 20 relabellings: its smallest two-sided p is 0.1, so it can never reach 0.05
  there. Welch is the default for that reason.
- equivalence: two one-sided tests (TOST) against a margin ±m, with the same
  standard error and df as the difference's test (`equivalence_p`).
- family-wise error: Holm's step-down adjustment across a report's hypotheses.

Arms that share seeds are compared in the arm + seed model instead (reports.blocked);
the smallest detectable difference is reports.power's.
"""

from __future__ import annotations

import enum
import math
import warnings
from dataclasses import dataclass, fields

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8
MIN_SEEDS = 3
"""Seeds per arm below which no difference is called a finding, whatever its p-value."""


class Method(str, enum.Enum):
    """How a difference of final accuracies is tested."""

    WELCH = "welch"
    """Welch's unequal-variance t-test (scipy.stats.ttest_ind, equal_var=False)."""
    PERMUTATION = "permutation"
    """Exact permutation test of the difference of means (scipy.stats.permutation_test, all relabellings)."""

    BLOCKED = "blocked"
    """Arm + seed model, per-arm residual variances, Satterthwaite df (reports.blocked): seeds as blocks."""
    POOLED = "pooled"
    """Arm + seed model with one residual variance pooled over the arms: only where a study declares it."""

    @property
    def label(self) -> str:
        return {Method.WELCH: "Welch's t-test", Method.PERMUTATION: "exact permutation test",
                Method.BLOCKED: "arm + seed model, per-arm residual variances (Satterthwaite df)",
                Method.POOLED: "arm + seed model, one pooled residual variance"}[self]


@dataclass(frozen=True)
class Comparison:
    """Treatment minus control, for one pair of arms or a batch of them (arrays over the leading axes).

    `p` is NaN where the test is undefined (one run on a side, or no spread at all: then `note` says why).
    `se` and `df` are the test's: the CI is difference ± t(df)·se, and TOST uses them too.
    """

    test: Method
    n_treatment: int
    n_control: int
    mean_treatment: np.ndarray
    mean_control: np.ndarray
    sd_treatment: np.ndarray
    sd_control: np.ndarray
    difference: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    p: np.ndarray
    df: np.ndarray
    se: np.ndarray

    @property
    def note(self) -> str | None:
        if min(int(self.n_treatment), int(self.n_control)) < 2:
            return "one run on a side: no spread to test against"
        if np.all(np.isnan(self.p)):
            return "every seed of both arms has the same accuracy: the t statistic is undefined"
        return None

    def pick(self, index) -> Comparison:
        """One contrast of a batch whose last axis runs over contrasts (`stack`, reports.blocked)."""
        return Comparison(**{f.name: (getattr(self, f.name) if f.name == "test" else
                                      np.asarray(getattr(self, f.name))[..., index]) for f in fields(self)})

    def to_dict(self) -> dict:
        """JSON fields of a single comparison (NaN written as None)."""
        ci = None if np.isnan(self.ci_low) else [finite_or_none(self.ci_low), finite_or_none(self.ci_high)]
        return {"test": self.test.value, "n_treatment": int(self.n_treatment), "n_control": int(self.n_control),
                "mean_treatment": finite_or_none(self.mean_treatment),
                "mean_control": finite_or_none(self.mean_control),
                "sd_treatment": finite_or_none(self.sd_treatment), "sd_control": finite_or_none(self.sd_control),
                "difference": finite_or_none(self.difference), "ci95": ci, "p": finite_or_none(self.p),
                "df": finite_or_none(self.df), "se": finite_or_none(self.se), "note": self.note}


def stack(parts: list[Comparison]) -> Comparison:
    """Comparisons of one test as one batch, contrasts on a new last axis."""
    return Comparison(**{f.name: (parts[0].test if f.name == "test" else
                                  np.stack([np.asarray(getattr(c, f.name)) for c in parts], axis=-1))
                         for f in fields(Comparison)})


def finite_or_none(value) -> float | None:
    """A float for JSON: NaN and infinities (an undefined statistic) become None."""
    value = float(value)
    return value if math.isfinite(value) else None


def compare(treatment, control, test: Method = Method.WELCH) -> Comparison:
    """Test the difference of mean final accuracy between two arms; seeds on the last axis.

    Leading axes are a batch (many simulated studies at once); the tests are scipy's, vectorized.
    """
    test = Method(test)
    if test not in (Method.WELCH, Method.PERMUTATION):
        raise ValueError(f"{test.value} compares arms in the arm + seed model: reports.blocked")
    a, b = np.asarray(treatment, float), np.asarray(control, float)
    na, nb = a.shape[-1], b.shape[-1]
    if na == 0 or nb == 0:
        raise ValueError("both arms need at least one run")
    batch = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    nan = np.full(batch, np.nan)
    sd_a = a.std(axis=-1, ddof=1) if na > 1 else nan
    sd_b = b.std(axis=-1, ddof=1) if nb > 1 else nan
    base = dict(test=test, n_treatment=na, n_control=nb, mean_treatment=a.mean(-1), mean_control=b.mean(-1),
                sd_treatment=sd_a, sd_control=sd_b, difference=a.mean(-1) - b.mean(-1))
    if min(na, nb) < 2:
        return Comparison(**base, ci_low=nan, ci_high=nan, p=nan, df=nan, se=nan)
    undefined = (np.ptp(a, axis=-1) == 0) & (np.ptp(b, axis=-1) == 0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy's precision warning on (near-)constant arms
        welch = stats.ttest_ind(a, b, axis=-1, equal_var=False)
        ci = welch.confidence_interval(1 - ALPHA)
        p = welch.pvalue
        if test is Method.PERMUTATION:
            p = stats.permutation_test((a, b), _mean_difference, permutation_type="independent",
                                       n_resamples=np.inf, vectorized=True, alternative="two-sided", axis=-1).pvalue
    blank = lambda x: np.where(undefined, np.nan, x)  # noqa: E731
    se = np.sqrt(a.var(axis=-1, ddof=1) / na + b.var(axis=-1, ddof=1) / nb)
    return Comparison(**base, ci_low=blank(ci.low), ci_high=blank(ci.high), p=blank(p), df=blank(welch.df),
                      se=blank(se))


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def equivalence_p(comparison: Comparison, margin: float) -> np.ndarray:
    """TOST p-value for |difference| < margin: the larger of the two one-sided t-tests against ±margin, each
    with the comparison's own standard error and df (Welch's for Welch: the same as shifting one arm by the
    margin in scipy's ttest_ind). NaN where the comparison is undefined."""
    if not margin > 0:
        raise ValueError(f"equivalence margin must be > 0, got {margin}")
    d, se, df = comparison.difference, comparison.se, comparison.df
    with np.errstate(all="ignore"):
        above = stats.t.sf((d + margin) / se, df)   # H0: d <= -m
        below = stats.t.cdf((d - margin) / se, df)  # H0: d >= +m
    return np.where(np.isnan(comparison.p), np.nan, np.maximum(above, below))


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values along the last axis (monotone, capped at 1).

    NaN entries are not in the family: they neither count in m nor get an adjusted value.
    """
    p = np.asarray(pvalues, float)
    present = ~np.isnan(p)
    m = present.sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(present, p, np.inf), axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1)
    factor = m - np.arange(p.shape[-1])
    adjusted = np.minimum(1.0, np.maximum.accumulate(np.nan_to_num(ranked * factor, nan=0.0), axis=-1))
    out = np.empty_like(p)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return np.where(present, out, np.nan)
