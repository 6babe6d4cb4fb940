"""Registry of the fidelity metrics a scan reports.

Every consumer (scanner tables, calibrate, correlate) needs to know whether a
metric gets worse as it grows and whether it is a ratio (shown as % on
screen, stored as a fraction). Registering that once, and refusing duplicate
names, keeps the three commands from disagreeing (lm-evaluation-harness style).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    is_ratio: bool
    description: str

    def badness(self, value: float) -> float:
        """A value that grows with quantization damage, whatever the metric's sign."""
        return -value if self.higher_is_better else value

    def format(self, value: float) -> str:
        """Screen rendering: ratios as percentages, dB with one decimal."""
        if self.is_ratio:
            return f"{100.0 * value:.2f}%"
        if self.name.endswith("_db"):
            return f"{value:.2f} dB"
        return f"{value:.4g}"


METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} is already registered")
    METRICS[metric.name] = metric
    return metric


def get_metric(name: str) -> Metric:
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}") from None


register_metric(Metric("relative_error", False, True,
                       "mean |q-x|/|x| over x != 0 (a zeroed x counts 100 %, so the deadzone dominates)"))
register_metric(Metric("deadzone_ratio", False, True,
                       "share of x != 0 quantized to 0"))
register_metric(Metric("sqnr_db", True, False,
                       "10 log10(sum x^2 / sum (q-x)^2) over all elements, higher is better (primary)"))
register_metric(Metric("saturation_ratio", False, True,
                       "share of elements clipped at the format's largest value"))
register_metric(Metric("mse", False, False, "mean (q-x)^2 over all elements"))
register_metric(Metric("sensitivity", False, False,
                       "mean per-token KL(P_fp || P_q) of the next-token distributions, in nats, with only this "
                       "layer quantized (srdd scan --sensitivity): the damage it does downstream"))

def definitions(names: Sequence[str]) -> str:
    """One line defining `names`, printed under every table that shows them."""
    return "  " + "; ".join(f"{n}: {get_metric(n).description}" for n in names)


# The three metrics every table and plot shows, primary first (DESIGN.md lesson 12).
PRIMARY_METRICS: tuple[str, ...] = ("sqnr_db", "relative_error", "deadzone_ratio")
