"""Per-layer noise multipliers from one scan metric.

All modes work on a value v_i that grows with damage: the metric itself for
relative_error and deadzone_ratio, and the noise-to-signal power ratio
10^(-SQNR/10) for sqnr_db (lower SQNR, more error, larger multiplier).
Rounding follows the published spreadsheet: the ratio's shortest decimal
form rounded half away from zero to two places.
"""

from __future__ import annotations

import enum
import statistics
from decimal import ROUND_HALF_UP, Decimal

from srdd.errors import SrddError


class Mode(str, enum.Enum):
    PROPORTIONAL = "proportional"
    """m_i = round(v_i / mean(v), 2): the published choice."""
    INVERSE = "inverse"
    """2 - m_i: more noise where quantization hurts least."""
    CEILING = "ceiling"
    """(2 - m_i) / max_j(2 - m_j): inverse, scaled so the largest is 1."""
    TIERS = "tiers"
    """Fixed values by band of v_i / mean(v) (default 1.5 / 1.2 / 1.0)."""
    TARGETED = "targeted"
    """1.0 inside the high-error zone, 0.0 elsewhere."""


def round2(x: float) -> float:
    return float(Decimal(repr(x)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def damage(metric: str, values: list[float]) -> list[float]:
    if metric == "sqnr_db":
        return [10 ** (-v / 10) for v in values]
    return list(values)


def proportional(v: list[float]) -> list[float]:
    mean = statistics.fmean(v)
    if mean <= 0:
        raise SrddError("the metric is zero for every layer: no basis for multipliers")
    return [round2(x / mean) for x in v]


def compute(mode: Mode, v: list[float], *, band: tuple[int, ...] = (), tier_cuts: tuple[float, ...] = (1.1, 1.0),
            tier_values: tuple[float, ...] = (1.5, 1.2, 1.0)) -> list[float]:
    if mode is Mode.PROPORTIONAL:
        return proportional(v)
    if mode is Mode.INVERSE:
        return [round2(2 - m) for m in proportional(v)]
    if mode is Mode.CEILING:
        inv = [2 - m for m in proportional(v)]
        top = max(inv)
        return [round2(x / top) for x in inv]
    if mode is Mode.TIERS:
        if len(tier_values) != len(tier_cuts) + 1:
            raise SrddError(f"--tier-values needs {len(tier_cuts) + 1} values for {len(tier_cuts)} cuts")
        mean = statistics.fmean(v)
        out = []
        for x in v:
            ratio = x / mean
            out.append(next((val for cut, val in zip(tier_cuts, tier_values) if ratio >= cut), tier_values[-1]))
        return out
    return [1.0 if i in band else 0.0 for i in range(len(v))]


def clip(values: list[float], lo: float, hi: float) -> list[float]:
    if lo > hi:
        raise SrddError(f"--clip: low {lo} is above high {hi}")
    return [min(max(x, lo), hi) for x in values]


def explain(mode: Mode, metric: str, raw: list[float], v: list[float], result: list[float],
            band: tuple[int, ...]) -> list[str]:
    mean = statistics.fmean(v)
    lines = []
    for i, (r, x, m) in enumerate(zip(raw, v, result)):
        base = f"layer {i:>2}: {metric} = {r:.6g}"
        if metric == "sqnr_db":
            base += f" -> noise/signal 10^(-{r:.4g}/10) = {x:.6g}"
        if mode is Mode.TARGETED:
            why = "inside the high-error zone" if i in band else "outside the high-error zone"
            lines.append(f"{base}; {why} -> {m}")
            continue
        ratio = x / mean
        lines.append(f"{base}; / mean {mean:.6g} = {ratio:.4f} -> {mode.value} -> {m}")
    return lines
