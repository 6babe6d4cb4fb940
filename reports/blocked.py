"""Arms that share seeds, compared in the arm + seed model (DESIGN.md §3 "Statistics of a comparison").

A seed fixes the training problems, the LoRA init, the sampling RNG and the noise draws, so runs
of different arms with the same seed are alike: the seed is a block. With complete blocks (every
arm run with the same seeds) the model is y[arm, seed] = mu[arm] + b[seed] + e, and a hypothesis is
the contrast mu[t] - mu[c], estimated by the difference of the arm means: the seed effects cancel
out of it, and out of the residuals that estimate its error.

Which error variance. One variance pooled over the arms (ordinary least squares, `pooled`) has the
most degrees of freedom, but when one arm is noisier than the rest it calls 7-8 % of null
comparisons findings (simulated in tests/reports/test_blocked.py). The default gives each arm
its own residual variance, read from its two-way residuals, and tests the contrast with
Satterthwaite's df: the exact first two moments of the contrast's variance estimate (a quadratic
form in normal data) at the estimated variances. Its false findings stay at 1-2 % of null
comparisons whether or not one arm is three times noisier, and it finds a four-sd effect at
4 seeds where Welch's pairwise test cannot. A limma-style moderation toward a prior estimated from
the arms was tried and rejected: with six arms and two df each, the prior's df is estimated as
infinite most of the time, which is pooling again (6.5-7 % false findings with one noisy arm).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from reports.compare import ALPHA, Comparison, Method


def residuals(y: np.ndarray) -> np.ndarray:
    """Two-way (arm + seed) residuals of y[..., arm, seed]."""
    return y - y.mean(-1, keepdims=True) - y.mean(-2, keepdims=True) + y.mean((-2, -1), keepdims=True)


def arm_variances(y: np.ndarray) -> np.ndarray:
    """Each arm's residual variance, [..., arm]: its sum of squared residuals over its share, (A-1)(n-1)/A,
    of the residual df (so that they average to the pooled variance)."""
    arms, seeds = y.shape[-2:]
    return (residuals(y) ** 2).sum(-1) * arms / ((arms - 1) * (seeds - 1))


def pooled_variance(y: np.ndarray) -> tuple[np.ndarray, int]:
    """The OLS residual variance of the arm + seed model and its df, (A-1)(n-1)."""
    arms, seeds = y.shape[-2:]
    df = (arms - 1) * (seeds - 1)
    return (residuals(y) ** 2).sum((-2, -1)) / df, df


def satterthwaite_df(variances: np.ndarray, pairs: Sequence[tuple[int, int]], seeds: int) -> np.ndarray:
    """df of (v_t + v_c)/n, the variance estimate of contrast t - c, as 2 E^2 / Var at the given variances.

    With u_a = C e_a (C centres over arms) the estimate is y'Qy, Q = k/n (u_t u_t' + u_c u_c') (x) C_n, so
    E = k (n-1)/n sum_a G_aa v_a and Var = 2 (k/n)^2 (n-1) sum_ab G_ab^2 v_a v_b with G = u_t u_t' + u_c u_c':
    df = (n-1) (sum_a G_aa v_a)^2 / sum_ab G_ab^2 v_a v_b. Equal variances give 2(n-1)(A-1)^2/((A-1)^2+1).
    """
    arms = variances.shape[-1]
    centred = np.eye(arms) - 1.0 / arms
    out = []
    for t, c in pairs:
        g = np.outer(centred[t], centred[t]) + np.outer(centred[c], centred[c])
        mean = variances @ np.diag(g)
        var = np.einsum("...a,ab,...b->...", variances, g**2, variances)
        with np.errstate(all="ignore"):
            out.append((seeds - 1) * mean**2 / var)
    return np.stack(out, axis=-1)


def estimates(y: np.ndarray, pairs: Sequence[tuple[int, int]], method: Method) -> tuple[np.ndarray, ...]:
    """Difference, standard error and df of each contrast t - c of y[..., arm, seed], arrays [..., pair]."""
    arms, seeds = y.shape[-2:]
    if method not in (Method.BLOCKED, Method.POOLED):
        raise ValueError(f"{method.value} is not an arm + seed analysis")
    if arms < 2 or seeds < 2:
        raise ValueError(f"the arm + seed model needs >= 2 arms and >= 2 seeds, got {arms} x {seeds}")
    t, c = (np.array(side, int) for side in zip(*pairs))
    means = y.mean(-1)
    difference = means[..., t] - means[..., c]
    if method is Method.POOLED:
        pooled, df_pooled = pooled_variance(y)
        se = np.sqrt(2 * pooled / seeds)[..., None] * np.ones(len(pairs))
        return difference, se, np.full(se.shape, float(df_pooled))
    v = arm_variances(y)
    return difference, np.sqrt((v[..., t] + v[..., c]) / seeds), satterthwaite_df(v, pairs, seeds)


def compare_blocked(y, pairs: Sequence[tuple[int, int]], method: Method = Method.BLOCKED) -> Comparison:
    """Contrasts t - c of y[..., arm, seed] (complete blocks), batched over leading axes and over pairs.

    With two arms this is the paired t-test (per-arm variances) or, pooled, the same with n - 1 df.
    The result's arrays are [..., pair]. `sd_*` are the arms' seed-to-seed sds (as in the results table);
    the test's own spread is `se`.
    """
    method = Method(method)
    y = np.asarray(y, float)
    difference, se, df = estimates(y, pairs, method)
    t, c = (np.array(side, int) for side in zip(*pairs))
    means, sd = y.mean(-1), y.std(-1, ddof=1)
    with np.errstate(all="ignore"):
        p = 2 * stats.t.sf(np.abs(difference) / se, df)
        half = stats.t.ppf(1 - ALPHA / 2, df) * se
    undefined = ~(se > 0)
    blank = lambda x: np.where(undefined, np.nan, x)  # noqa: E731
    counts = np.full(len(pairs), y.shape[-1])
    return Comparison(test=method, n_treatment=counts, n_control=counts, mean_treatment=means[..., t],
                      mean_control=means[..., c], sd_treatment=sd[..., t], sd_control=sd[..., c],
                      difference=difference, ci_low=blank(difference - half), ci_high=blank(difference + half),
                      p=blank(p), df=blank(df), se=blank(se))


def heterogeneity(y: np.ndarray) -> dict:
    """Levene (median-centred) and Bartlett tests of equal residual variances across the arms of y[arm, seed]:
    the check a declared pooled variance is shown with (both have little power at 3 seeds)."""
    groups = list(residuals(np.asarray(y, float)))
    levene, bartlett = stats.levene(*groups, center="median"), stats.bartlett(*groups)
    return {"levene_statistic": float(levene.statistic), "levene_p": float(levene.pvalue),
            "bartlett_statistic": float(bartlett.statistic), "bartlett_p": float(bartlett.pvalue),
            "residual_sd": [float(s) for s in np.sqrt(arm_variances(np.asarray(y, float)))]}
