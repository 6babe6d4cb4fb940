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
- equivalence: two one-sided Welch tests (TOST) against a margin ±m.
- detectable effect: the smallest |difference| Welch's test would find with 80 %
  power at the given alpha, from the arms' observed spread (simulated, see
  `detectable_effect`).
- family-wise error: Holm's step-down adjustment across a report's hypotheses.
"""

from __future__ import annotations

import enum
import math
import warnings
from dataclasses import dataclass

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

    @property
    def label(self) -> str:
        return {Method.WELCH: "Welch's t-test", Method.PERMUTATION: "exact permutation test"}[self]


@dataclass(frozen=True)
class Comparison:
    """Treatment minus control, for one pair of arms or a batch of them (arrays over the leading axes).

    `p` is NaN where the test is undefined (one run on a side, or no spread at all: then `note` says why).
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

    @property
    def note(self) -> str | None:
        if min(self.n_treatment, self.n_control) < 2:
            return "one run on a side: no spread to test against"
        if np.all(np.isnan(self.p)):
            return "every seed of both arms has the same accuracy: the t statistic is undefined"
        return None

    def to_dict(self) -> dict:
        """JSON fields of a single comparison (NaN written as None)."""
        ci = None if np.isnan(self.ci_low) else [finite_or_none(self.ci_low), finite_or_none(self.ci_high)]
        return {"test": self.test.value, "n_treatment": self.n_treatment, "n_control": self.n_control,
                "mean_treatment": finite_or_none(self.mean_treatment),
                "mean_control": finite_or_none(self.mean_control),
                "sd_treatment": finite_or_none(self.sd_treatment), "sd_control": finite_or_none(self.sd_control),
                "difference": finite_or_none(self.difference), "ci95": ci, "p": finite_or_none(self.p),
                "df": finite_or_none(self.df),
                "note": self.note}


def finite_or_none(value) -> float | None:
    """A float for JSON: NaN and infinities (an undefined statistic) become None."""
    value = float(value)
    return value if math.isfinite(value) else None


def compare(treatment, control, test: Method = Method.WELCH) -> Comparison:
    """Test the difference of mean final accuracy between two arms; seeds on the last axis.

    Leading axes are a batch (many simulated studies at once); the tests are scipy's, vectorized.
    """
    test = Method(test)
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
        return Comparison(**base, ci_low=nan, ci_high=nan, p=nan, df=nan)
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
    return Comparison(**base, ci_low=blank(ci.low), ci_high=blank(ci.high), p=blank(p), df=blank(welch.df))


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def equivalence_p(treatment, control, margin: float) -> np.ndarray:
    """TOST p-value for |mean difference| < margin (the larger one-sided Welch p); NaN where undefined."""
    if not margin > 0:
        raise ValueError(f"equivalence margin must be > 0, got {margin}")
    a, b = np.asarray(treatment, float), np.asarray(control, float)
    batch = np.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    if min(a.shape[-1], b.shape[-1]) < 2:
        return np.full(batch, np.nan)
    undefined = (np.ptp(a, axis=-1) == 0) & (np.ptp(b, axis=-1) == 0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        above = stats.ttest_ind(a + margin, b, axis=-1, equal_var=False, alternative="greater").pvalue  # H0: d <= -m
        below = stats.ttest_ind(a - margin, b, axis=-1, equal_var=False, alternative="less").pvalue     # H0: d >= +m
    return np.where(undefined, np.nan, np.maximum(above, below))


POWER_DRAWS = 4000
"""Simulated studies behind a detectable effect: Monte-Carlo error of the power about ±0.006."""


def detectable_effect(sd_treatment: float | None, sd_control: float | None, n_treatment: int, n_control: int,
                      *, alpha: float = ALPHA, power: float = POWER, seed: int = 0) -> float | None:
    """Smallest |difference| that a two-sided Welch test at `alpha` finds with probability `power`.

    Taking the observed spreads as the true ones, the power of Welch's test is simulated
    (normal accuracies, fixed seed, the same draws for every candidate difference) and the
    difference is found by bisection. The textbook noncentral-t formula is not used: it
    treats the spreads as known, and at 3 seeds per arm, where Welch's df fall to 2-4, it
    overstates the power (0.66 where it promises 0.8). None when an arm has no spread
    estimate or both spreads are zero.
    """
    if sd_treatment is None or sd_control is None or not (math.isfinite(sd_treatment) and math.isfinite(sd_control)):
        return None
    se = math.sqrt(sd_treatment**2 / n_treatment + sd_control**2 / n_control)
    if se == 0:
        return None
    rng = np.random.default_rng(seed)
    za = rng.standard_normal((POWER_DRAWS, n_treatment)) * sd_treatment
    zb = rng.standard_normal((POWER_DRAWS, n_control)) * sd_control

    def simulated_power(delta: float) -> float:
        return float(np.mean(stats.ttest_ind(za + delta, zb, axis=1, equal_var=False).pvalue < alpha))

    low, high = 0.0, se
    while simulated_power(high) < power:
        low, high = high, 2 * high
    while high - low > 1e-4 * se:
        mid = (low + high) / 2
        low, high = (mid, high) if simulated_power(mid) < power else (low, mid)
    return high


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
