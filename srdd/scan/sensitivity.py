"""Does a layer's local error predict the damage it does? Rank correlation across layers.

The damage of layer i is its sensitivity: the mean output KL(P_fp || P_q)
with only layer i quantized (`srdd scan --sensitivity`). Each local metric is
turned into its badness (SQNR's sign flipped), so a positive Spearman rho
always means "the layers this metric calls worse are the ones that do more
damage". Layers are not independent replicates (neighbours share inputs,
and depth drives both columns), so rho describes this model's profile; no
p-value is given, because one computed as if layers were samples would
overstate the evidence.
"""

from __future__ import annotations

import math

from scipy import stats

from srdd.metrics import get_metric

LOCAL_METRICS = ("relative_error", "deadzone_ratio", "sqnr_db")
SENSITIVITY_KEY = "kl_mean"
NOTE = ("Spearman rho across layers between each local metric's badness and the sensitivity; layers are not "
        "independent replicates, so rho describes this model's profile and carries no p-value")


def sensitivity_values(doc: dict) -> list[float] | None:
    """Per-layer sensitivity of a scan document, or None when it was scanned without --sensitivity."""
    values = [layer.get("sensitivity", {}).get(SENSITIVITY_KEY) for layer in doc["layers"]]
    return None if any(v is None for v in values) else values


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman rho (average ranks for ties), or None when either side does not vary (nothing to rank)."""
    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    rho = float(stats.spearmanr(x, y).statistic)
    return rho if math.isfinite(rho) else None


def rank_correlations(doc: dict) -> dict | None:
    """{metric: {"rho", "n"}} for the local metrics of the primary site, or None without sensitivity."""
    damage = sensitivity_values(doc)
    if damage is None:
        return None
    out = {}
    for name in LOCAL_METRICS:
        metric = get_metric(name)
        local = [metric.badness(layer["primary"][name]) for layer in doc["layers"]]
        out[name] = {"rho": spearman(local, damage), "n": len(damage)}
    return out


def best_predictor(correlations: dict) -> str | None:
    """The local metric whose ranking of the layers agrees most with the sensitivity's (largest positive rho);
    None when none agrees at all."""
    ranked = [(c["rho"], name) for name, c in correlations.items() if c["rho"] is not None and c["rho"] > 0]
    return max(ranked)[1] if ranked else None
