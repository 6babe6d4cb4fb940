"""Mergeable quantization statistics (TransformerEngine-debug style).

Every metric of DESIGN.md §3 is derived from a handful of float64 sums and
counts, so one fused pass per tensor gives all of them, and batches, sites or
ranks merge by addition (amax by max). Ratios are derived only at the end,
which is what makes SQNR a power-sum ratio over the whole calibration set and
not an average of per-prompt dB values.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

SQNR_CAP_DB = 200.0
"""Reported when the quantization error is exactly zero (flagged with `sqnr_capped`)."""

# Order of the float64 vector a stats kernel returns; QuantStats.from_vector reads it.
SUM_FIELDS: tuple[str, ...] = (
    "nonzero", "deadzone", "saturated", "nonfinite",
    "sum_x2", "sum_x4", "sum_err2", "sum_rel", "amax",
)


@dataclass(frozen=True)
class QuantStats:
    numel: int = 0
    nonzero: int = 0
    deadzone: int = 0
    saturated: int = 0
    nonfinite: int = 0
    sum_x2: float = 0.0
    sum_x4: float = 0.0
    sum_err2: float = 0.0
    sum_rel: float = 0.0
    amax: float = 0.0

    @classmethod
    def empty(cls) -> QuantStats:
        return cls()

    @classmethod
    def from_vector(cls, numel: int, values: list[float]) -> QuantStats:
        kw = dict(zip(SUM_FIELDS, values))
        for key in ("nonzero", "deadzone", "saturated", "nonfinite"):
            kw[key] = int(kw[key])
        return cls(numel=numel, **kw)

    def merge(self, other: QuantStats) -> QuantStats:
        kw = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        kw["amax"] = max(self.amax, other.amax)
        return QuantStats(**kw)

    __add__ = merge

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> QuantStats:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown QuantStats keys: {sorted(unknown)}")
        return cls(**d)

    @property
    def finite(self) -> int:
        return self.numel - self.nonfinite

    def metrics(self) -> dict:
        """DESIGN.md §3 metrics; every value finite so it can go straight into JSON."""
        n = self.finite
        if self.sum_err2 > 0.0 and self.sum_x2 > 0.0:
            sqnr = 10.0 * math.log10(self.sum_x2 / self.sum_err2)
            capped = sqnr > SQNR_CAP_DB
        else:
            sqnr, capped = SQNR_CAP_DB, True
        return {
            "relative_error": self.sum_rel / self.nonzero if self.nonzero else 0.0,
            "deadzone_ratio": self.deadzone / self.nonzero if self.nonzero else 0.0,
            "sqnr_db": min(sqnr, SQNR_CAP_DB),
            "sqnr_capped": capped,
            "saturation_ratio": self.saturated / n if n else 0.0,
            "mse": self.sum_err2 / n if n else 0.0,
            "numel": self.numel,
            "nonzero": self.nonzero,
            "nonfinite": self.nonfinite,
            "amax": self.amax,
            "rms": math.sqrt(self.sum_x2 / n) if n else 0.0,
            # Non-central (Pearson) kurtosis E[x^4]/E[x^2]^2: 3 for a zero-mean Gaussian,
            # large for the outlier-heavy channels that break block scaling.
            "kurtosis": n * self.sum_x4 / self.sum_x2**2 if self.sum_x2 > 0 else 0.0,
        }
