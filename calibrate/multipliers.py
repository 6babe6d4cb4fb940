"""Per-layer noise multipliers from one scan metric, in exact decimal arithmetic.

Every mode works on a value v_i that grows with quantization damage:

- relative_error, deadzone_ratio: v_i is the metric itself;
- sqnr_db (higher is better, `Metric.badness` flips its sign): v_i is the
  relative RMS error 10^(-SQNR_i/20) = sqrt(sum (q-x)^2 / sum x^2), i.e. the
  error amplitude over the signal amplitude -- the same kind of quantity as
  relative_error, and in the units of sigma (an amplitude). Lower SQNR, larger
  v_i, larger multiplier: 3 dB worse than average gives x1.41.

The published multipliers were round(error_i / mean error, 2) in a spreadsheet,
whose ROUND rounds halves away from zero on the decimal value. Binary floats
turn a tie such as 33.67/36.4 = 0.925 into 0.92499... or 0.92500...01, so the
ratio is computed here in `Decimal` from the shortest decimal form of each
value (the text of the scan file) and rounded ROUND_HALF_UP: 0.925 -> 0.93,
0.825 -> 0.83, 1.165 -> 1.17 (Python's round() would give 0.92/0.82/1.17).
Every mode's result is rounded the same way to two decimals.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, localcontext

from srdd.errors import SrddError
from srdd.metrics import get_metric

PRECISION = 50
CENT = Decimal("0.01")


class Mode(str, enum.Enum):
    PROPORTIONAL = "proportional"
    """m_i = round(v_i / mean(v), 2): the published choice (more noise where the error is larger)."""
    INVERSE = "inverse"
    """m_i = 2 - round(v_i / mean(v), 2): more noise where quantization hurts least."""
    CEILING = "ceiling"
    """m_i = round((2 - p_i) / max_j (2 - p_j), 2) with p = proportional: inverse scaled so the largest is 1."""
    TIERS = "tiers"
    """Fixed values by band of z_i = (v_i - mean) / std (default 1.5 / 1.2 / 1.0)."""
    TARGETED = "targeted"
    """1.0 inside the high-error band, 0.0 elsewhere."""


def dec(x: float) -> Decimal:
    """The shortest decimal that round-trips to `x` (what a JSON file holds)."""
    return Decimal(repr(float(x)))


def round2(x: Decimal | float) -> Decimal:
    """Two decimals, halves away from zero (spreadsheet ROUND), on the exact decimal value."""
    value = x if isinstance(x, Decimal) else dec(x)
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def basis_description(metric: str) -> str:
    if get_metric(metric).higher_is_better:
        return f"v_i = 10^(-{metric}_i/20), the relative RMS error (lower {metric} -> larger v_i)"
    return f"v_i = {metric}_i"


def damage(metric: str, raw: Sequence[float]) -> list[Decimal]:
    """v_i for every layer: grows with damage, positive, exact decimals."""
    m = get_metric(metric)
    if not m.higher_is_better:
        return [dec(x) for x in raw]
    if not metric.endswith("_db"):
        raise SrddError(f"--metric {metric}: no damage transform is defined for this metric")
    with localcontext() as ctx:
        ctx.prec = PRECISION
        return [+(Decimal(10) ** (-dec(x) / 20)) for x in raw]


@dataclass(frozen=True)
class Tiers:
    """z-score cuts, strictly descending, and one value per band (len(values) == len(cuts) + 1)."""

    cuts: tuple[Decimal, ...] = (Decimal("0.5"), Decimal("-0.5"))
    values: tuple[Decimal, ...] = (Decimal("1.5"), Decimal("1.2"), Decimal("1.0"))

    @classmethod
    def parse(cls, text: str) -> Tiers:
        """'0.5:1.5,-0.5:1.2,1.0' = z >= 0.5 -> 1.5, z >= -0.5 -> 1.2, else 1.0."""
        items = [t.strip() for t in text.split(",") if t.strip()]
        cuts, values = [], []
        try:
            for item in items[:-1]:
                cut, _, value = item.partition(":")
                if not _:
                    raise ValueError(item)
                cuts.append(Decimal(cut))
                values.append(Decimal(value))
            if not items or ":" in items[-1]:
                raise ValueError(text)
            values.append(Decimal(items[-1]))
        except (ValueError, ArithmeticError):
            raise SrddError(f"--tiers: expected 'Z1:VALUE1,Z2:VALUE2,...,REST' (z-score cuts, descending), "
                            f"e.g. '0.5:1.5,-0.5:1.2,1.0'; got {text!r}") from None
        return cls(tuple(cuts), tuple(values))

    def __post_init__(self) -> None:
        if len(self.values) != len(self.cuts) + 1:
            raise SrddError(f"--tiers: {len(self.cuts)} cuts need {len(self.cuts) + 1} values")
        if any(not c.is_finite() for c in self.cuts) or any(not v.is_finite() or v < 0 for v in self.values):
            raise SrddError("--tiers: cuts must be finite and values finite and >= 0")
        if any(a <= b for a, b in zip(self.cuts, self.cuts[1:])):
            raise SrddError(f"--tiers: cuts must be strictly descending, got {[str(c) for c in self.cuts]}")

    def spec(self) -> str:
        return ",".join([f"{c}:{v}" for c, v in zip(self.cuts, self.values)] + [str(self.values[-1])])

    def pick(self, z: Decimal) -> tuple[Decimal, str]:
        for cut, value in zip(self.cuts, self.values):
            if z >= cut:
                return value, f">= {cut}"
        return self.values[-1], f"< {self.cuts[-1]}" if self.cuts else "single tier"


@dataclass(frozen=True)
class Statistics:
    mean: Decimal
    std: Decimal  # population standard deviation
    minimum: Decimal
    maximum: Decimal


def statistics_of(v: Sequence[Decimal]) -> Statistics:
    with localcontext() as ctx:
        ctx.prec = PRECISION
        mean = sum(v, Decimal(0)) / len(v)
        std = (sum(((x - mean) ** 2 for x in v), Decimal(0)) / len(v)).sqrt()
    return Statistics(mean, std, min(v), max(v))


@dataclass(frozen=True)
class LayerMultiplier:
    layer: int
    value: Decimal       # v_i
    multiplier: Decimal  # final, after --clip
    why: str             # the formula with the numbers


def _num(x: Decimal, digits: int = 6) -> str:
    """A short, exact-looking rendering: up to `digits` significant digits, trailing zeros dropped."""
    if x == 0:
        return "0"
    with localcontext() as ctx:
        ctx.prec = digits
        y = +x
    text = format(y.normalize(), "f")
    return text


def compute(mode: Mode, v: Sequence[Decimal], *, band: Sequence[int] = (), tiers: Tiers | None = None,
            clip: tuple[Decimal, Decimal] | None = None) -> list[LayerMultiplier]:
    """Multipliers for every layer, each with the formula that produced it."""
    if not v:
        raise SrddError("the scan has no layers")
    st = statistics_of(v)
    if st.mean <= 0:
        raise SrddError("the metric is zero for every layer: no basis for multipliers")
    mean_s = _num(st.mean)
    with localcontext() as ctx:
        ctx.prec = PRECISION
        ratios = [x / st.mean for x in v]
        prop = [round2(r) for r in ratios]
        top = max(2 - p for p in prop)
        out: list[tuple[Decimal, str]] = []
        for i, (x, r, p) in enumerate(zip(v, ratios, prop)):
            base = f"round({_num(x)} / {mean_s}, 2) = round({_num(r, 8)}, 2) = {p}"
            if mode is Mode.PROPORTIONAL:
                out.append((p, base))
            elif mode is Mode.INVERSE:
                m = round2(2 - p)
                out.append((m, f"2 - {base} = {m}"))
            elif mode is Mode.CEILING:
                q = (2 - p) / top
                m = round2(q)
                out.append((m, f"p = {base}; round((2 - {p}) / {_num(top)}, 2) = round({_num(q, 8)}, 2) = {m}"
                               f"  [{_num(top)} = max_j(2 - p_j)]"))
            elif mode is Mode.TIERS:
                tiers = tiers or Tiers()
                if st.std == 0:
                    raise SrddError("tiers: every layer has the same value (std 0), so no band stands out")
                z = (x - st.mean) / st.std
                m, rule = tiers.pick(z)
                out.append((m, f"z = ({_num(x)} - {mean_s}) / {_num(st.std)} = {_num(z, 4)} {rule} -> {m}"))
            elif mode is Mode.TARGETED:
                inside = i in band
                m = Decimal("1.0") if inside else Decimal("0.0")
                where = f"{band[0]}-{band[-1]}" if band else "(none)"
                out.append((m, f"{'inside' if inside else 'outside'} the high-error band {where} -> {m}"))
            else:  # pragma: no cover - Mode is closed
                raise SrddError(f"unknown mode {mode}")
    result = []
    for i, ((m, why), x) in enumerate(zip(out, v)):
        if clip is not None:
            lo, hi = clip
            clipped = min(max(m, lo), hi)
            if clipped != m:
                why += f"; clipped to [{lo}, {hi}] -> {clipped}"
            m = clipped
        result.append(LayerMultiplier(i, x, m, why))
    negative = [r.layer for r in result if r.multiplier < 0]
    if negative:
        raise SrddError(f"{mode.value} gives negative multipliers for layers {negative} (their value is more "
                        "than twice the mean); pass --clip 0,HI or choose another mode")
    return result


def parse_clip(text: str) -> tuple[Decimal, Decimal]:
    try:
        lo, hi = (Decimal(t.strip()) for t in text.split(","))
    except (ValueError, ArithmeticError):
        raise SrddError(f"--clip: expected LO,HI (two numbers), got {text!r}") from None
    if not (lo.is_finite() and hi.is_finite()) or lo < 0 or lo > hi:
        raise SrddError(f"--clip: need 0 <= LO <= HI, got {text!r}")
    return lo, hi
