"""Power of the report's tests, and the smallest difference they find with 80 % power.

Every analysis is scored the way it is run: simulated null studies go through the same code
(reports.compare, reports.blocked) and give, per contrast and draw, the estimate's deviation,
its standard error and its df. A true difference delta shifts only the estimate, so the power at
any delta is one vectorised count over the same draws, and the detectable difference is a
bisection on it. With 100,000 draws the power is right to about ±0.0013 (one Monte-Carlo sd),
well inside the ±0.01 DESIGN §3 asks for. The pooled analysis needs no simulation: its variance
estimate is exactly a scaled chi-square, so the noncentral t gives its power exactly.

The textbook noncentral-t shortcut is not used for Welch or the per-arm analysis: their variance
estimates are not scaled chi-squares, and at 3 seeds the shortcut misstates the power by more
than 0.01.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

from reports.compare import POWER, Method, compare

DRAWS = 100_000
"""Simulated studies behind a simulated power: Monte-Carlo sd of a power near 0.8 about 0.0013."""


@dataclass(frozen=True)
class NullDraws:
    """Per simulated null study [draw, contrast]: estimate minus truth, its standard error, its df."""

    deviation: np.ndarray
    se: np.ndarray
    df: np.ndarray

    def critical(self, alpha: float) -> np.ndarray:
        """|estimate| beyond which each simulated two-sided test at `alpha` rejects (NaN: never)."""
        return stats.t.ppf(1 - alpha / 2, self.df) * self.se

    def power(self, delta: float | np.ndarray, alpha: float) -> np.ndarray:
        """Probability per contrast that a two-sided test at `alpha` rejects when the truth is `delta`."""
        with np.errstate(invalid="ignore"):
            return np.mean(np.abs(self.deviation + delta) > self.critical(alpha), axis=0)

    @property
    def mc_error(self) -> float:
        """Monte-Carlo sd of a simulated power near POWER."""
        return math.sqrt(POWER * (1 - POWER) / self.deviation.shape[0])


def simulate_null(method: Method, arm_variances: np.ndarray, seeds: Sequence[int] | int,
                  pairs: Sequence[tuple[int, int]], *, seed_variance: float = 0.0, draws: int | None = None,
                  seed: int = 0) -> NullDraws:
    """Null studies of the design: arms with the given (true) residual variances, seed effects shared by the
    arms with `seed_variance`, run through `method`. `seeds` per arm: one count for all (complete blocks),
    or one per arm (Welch only)."""
    from reports.blocked import estimates

    method = Method(method)
    variances = np.asarray(arm_variances, float)
    counts = np.broadcast_to(np.asarray(seeds, int), variances.shape)
    rng = np.random.default_rng(seed)
    draws = draws or DRAWS
    if method in (Method.BLOCKED, Method.POOLED):
        n = int(counts[0])
        y = (rng.standard_normal((draws, len(variances), n)) * np.sqrt(variances)[:, None]
             + rng.standard_normal((draws, 1, n)) * math.sqrt(seed_variance))
        return NullDraws(*estimates(y, pairs, method))
    blocks = rng.standard_normal((draws, int(counts.max()))) * math.sqrt(seed_variance)
    arms = [rng.standard_normal((draws, k)) * math.sqrt(v) + blocks[:, :k] for v, k in zip(variances, counts)]
    out = [compare(arms[t], arms[c], Method.WELCH) for t, c in pairs]
    return NullDraws(*(np.stack([getattr(o, f) for o in out], axis=1) for f in ("difference", "se", "df")))


def detectable(null: NullDraws, alpha: float, power: float = POWER) -> np.ndarray:
    """Per contrast, the smallest delta >= 0 whose simulated power reaches `power` (NaN where none can)."""
    critical = null.critical(alpha)
    out = []
    for deviation, crit in zip(null.deviation.T, critical.T):
        scale = float(np.nanmedian(crit))

        def reaches(delta: float) -> bool:
            with np.errstate(invalid="ignore"):
                return bool(np.mean(np.abs(deviation + delta) > crit) >= power)

        if not scale > 0 or not reaches(1e6 * scale):
            out.append(np.nan)
            continue
        low, high = 0.0, scale
        while not reaches(high):
            low, high = high, 2 * high
        while high - low > 1e-6 * scale:
            mid = (low + high) / 2
            low, high = (mid, high) if not reaches(mid) else (low, mid)
        out.append(high)
    return np.array(out)


def noncentral_t_power(delta: float, se: float, df: float, alpha: float) -> float:
    """Exact power of a two-sided t-test whose variance estimate is se^2 chi2_df/df (the pooled analysis)."""
    crit = stats.t.ppf(1 - alpha / 2, df)
    ncp = delta / se
    wrong_side = np.nan_to_num(stats.nct.sf(crit, df, -ncp))  # P(T < -crit); scipy gives NaN where it underflows
    return float(stats.nct.sf(crit, df, ncp) + wrong_side)


def noncentral_t_detectable(se: float, df: float, alpha: float, power: float = POWER) -> float:
    """The delta at which `noncentral_t_power` equals `power` (solved in units of se: the noncentrality stays
    small wherever se is, where scipy's noncentral t is accurate)."""
    high = 1.0
    while noncentral_t_power(high, 1.0, df, alpha) < power:
        high *= 2
    return se * float(optimize.brentq(lambda d: noncentral_t_power(d, 1.0, df, alpha) - power, 0.0, high,
                                      xtol=1e-12))


def describe(method: Method, null: NullDraws | None) -> str:
    """How a detectable difference was computed, for the report."""
    if null is None:
        return "exact noncentral t (the pooled variance estimate is a scaled chi-square)"
    return (f"simulated power of the {Method(method).value} analysis, {null.deviation.shape[0]:,} draws "
            f"(Monte-Carlo sd of the power ±{null.mc_error:.4f})")


def detectable_for_report(method: Method, arm_variances: np.ndarray, seeds: Sequence[int] | int,
                          pairs: Sequence[tuple[int, int]], alpha: float, *, pooled: tuple[float, int] | None = None,
                          power: float = POWER) -> tuple[list[float | None], str]:
    """Detectable |difference| per contrast with the observed spreads taken as the truth, and how it was found.

    Welch is simulated from each arm's seed-to-seed variance, the per-arm blocked analysis from the arms'
    residual variances, the pooled one exactly from the pooled variance and its df.
    """
    method = Method(method)
    if method is Method.POOLED:
        variance, df = pooled  # type: ignore[misc]
        se = math.sqrt(2 * variance / int(np.asarray(seeds).flat[0]))
        value = noncentral_t_detectable(se, df, alpha, power) if se > 0 else None
        return [value] * len(pairs), describe(method, None)
    sim = Method.WELCH if method is Method.PERMUTATION else method
    variances = np.asarray(arm_variances, float)
    if not np.all(np.isfinite(variances)) or not np.any(variances > 0):
        return [None] * len(pairs), "no spread to simulate from"
    null = simulate_null(sim, variances, seeds, pairs)
    found = detectable(null, alpha, power)
    text = describe(sim, null) + (" (Welch's: the permutation test at 3 seeds cannot reach 0.05)"
                                  if method is Method.PERMUTATION else "")
    return [float(v) if math.isfinite(v) else None for v in found], text
