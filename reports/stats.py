"""Correlations with p-values and a 95 % interval that agrees with them; small samples are reported as such.

The interval is Fisher's: z = atanh(r) ± c / sqrt(n - 3), mapped back with tanh. Its half-width c is
not 1.96 but sqrt(n - 3) · atanh(r_crit), r_crit the |r| at which Pearson's exact t-test (scipy's
p-value, n - 2 df) reaches p = 0.05. So the interval excludes 0 exactly when p < 0.05 (with 1.96
the two disagree in a thin band of r; the percentile bootstrap used before disagreed outright: it
treated 27 runs as independent values of an x set once per arm). c is 1.966 at n = 27 and 1.96 in
the limit.

Every correlation carries a `warning` when its sample is small (n < 10 points: r swings widely and
its p-value and interval lean on assumptions the sample cannot check), when its points are layers
of one run (neighbouring layers share the residual stream, so they are not independent replicates:
read r as a description of that run's profile, not as evidence about layers in general), or when
x is set per arm (the runs of an arm repeat one x, and arms share seeds: the n runs are not n
independent values of x, so the p-value and interval are optimistic).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

SMALL_N = 10
CI_METHOD = ("Fisher z interval of Pearson r, its width set so that it excludes 0 exactly when Pearson's "
             "exact t-test gives p < 0.05")


def _warning(n: int, scope: str, per_arm: bool) -> str | None:
    parts = []
    if n < SMALL_N:
        parts.append(f"n = {n} < {SMALL_N}: r is unstable and its p-value and CI are rough")
    if scope == "across_layers":
        parts.append("layers of one run are not independent replicates: descriptive only")
    if per_arm:
        parts.append("x is set per arm: runs of an arm repeat it and arms share seeds, so p and CI are optimistic")
    return "; ".join(parts) or None


def _set_per_arm(x: np.ndarray, arms: Sequence[str] | None) -> bool:
    if arms is None:
        return False
    values: dict[str, set] = {}
    for arm, v in zip(arms, x):
        values.setdefault(arm, set()).add(float(v))
    return len(values) < len(x) and all(len(v) == 1 for v in values.values())


def correlation(x: list[float], y: list[float], *, scope: str, xname: str, yname: str, run: str | None = None,
                arms: Sequence[str] | None = None) -> dict:
    """Pearson and Spearman correlation of y on x; `arms` names each point's arm when the points are runs."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    out: dict = {"scope": scope, "x": xname, "y": yname, "n": len(x),
                 "warning": _warning(len(x), scope, _set_per_arm(xa, arms))}
    if run is not None:
        out["run"] = run
    unit = "layers" if scope == "across_layers" else "runs"
    empty = {"pearson_r": None, "pearson_p": None, "spearman_rho": None, "spearman_p": None, "ci95": None}
    if len(x) < 4:
        return {**out, **empty, "note": f"not enough {unit} (n={len(x)} < 4)"}
    if np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return {**out, **empty, "note": f"{'x' if np.ptp(xa) == 0 else 'y'} is constant: correlation undefined"}
    pr = stats.pearsonr(xa, ya)
    sr = stats.spearmanr(xa, ya)
    return {**out, "pearson_r": float(pr.statistic), "pearson_p": float(pr.pvalue),
            "spearman_rho": float(sr.statistic), "spearman_p": float(sr.pvalue),
            "ci95": fisher_interval(float(pr.statistic), len(x)), "note": None}


def fisher_interval(r: float, n: int, alpha: float = 0.05) -> list[float]:
    """95 % interval of r on Fisher's z scale whose half-width matches Pearson's exact test at r = 0."""
    t = stats.t.ppf(1 - alpha / 2, n - 2)
    half = math.atanh(t / math.sqrt(n - 2 + t * t))
    z = math.atanh(min(max(r, -1 + 1e-15), 1 - 1e-15))
    return [math.tanh(z - half), math.tanh(z + half)]
