"""Correlations with p-values and a seeded bootstrap CI; small samples are reported as such.

Every correlation carries a `warning` when its sample is small (n < 10 points: r
swings widely and its p-value and CI lean on assumptions the sample cannot check)
or when its points are layers of one run (neighbouring layers share the residual
stream, so they are not independent replicates: read r as a description of that
run's profile, not as evidence about layers in general).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

BOOTSTRAP_RESAMPLES = 2000
SMALL_N = 10


def _warning(n: int, scope: str) -> str | None:
    parts = []
    if n < SMALL_N:
        parts.append(f"n = {n} < {SMALL_N}: r is unstable and its p-value and CI are rough")
    if scope == "across_layers":
        parts.append("layers of one run are not independent replicates: descriptive only")
    return "; ".join(parts) or None


def correlation(x: list[float], y: list[float], *, scope: str, xname: str, yname: str, run: str | None = None,
                seed: int = 0) -> dict:
    out: dict = {"scope": scope, "x": xname, "y": yname, "n": len(x), "warning": _warning(len(x), scope)}
    if run is not None:
        out["run"] = run
    unit = "layers" if scope == "across_layers" else "runs"
    empty = {"pearson_r": None, "pearson_p": None, "spearman_rho": None, "spearman_p": None, "ci95": None}
    if len(x) < 3:
        return {**out, **empty, "note": f"not enough {unit} (n={len(x)} < 3)"}
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    if np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return {**out, **empty, "note": f"{'x' if np.ptp(xa) == 0 else 'y'} is constant: correlation undefined"}
    pr = stats.pearsonr(xa, ya)
    sr = stats.spearmanr(xa, ya)
    return {**out, "pearson_r": float(pr.statistic), "pearson_p": float(pr.pvalue),
            "spearman_rho": float(sr.statistic), "spearman_p": float(sr.pvalue),
            "ci95": bootstrap_ci(xa, ya, seed), "bootstrap": {"resamples": BOOTSTRAP_RESAMPLES, "seed": seed},
            "note": None}


def bootstrap_ci(x: np.ndarray, y: np.ndarray, seed: int) -> list[float] | None:
    """Percentile 95 % CI of Pearson r over paired resamples (degenerate resamples skipped)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(BOOTSTRAP_RESAMPLES, len(x)))
    xs, ys = x[idx], y[idx]
    xc = xs - xs.mean(1, keepdims=True)
    yc = ys - ys.mean(1, keepdims=True)
    den = np.sqrt((xc**2).sum(1) * (yc**2).sum(1))
    ok = den > 0
    if ok.sum() < 10:
        return None
    r = (xc * yc).sum(1)[ok] / den[ok]
    lo, hi = np.percentile(r, [2.5, 97.5])
    return [float(lo), float(hi)] if math.isfinite(lo) and math.isfinite(hi) else None
