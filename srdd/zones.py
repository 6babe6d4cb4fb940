"""Layer zones, one definition for `srdd scan`, `srdd show` and `srdd calibrate`.

Two kinds of zone:

- depth zones, the published five-zone split: for 28 layers first 0-3,
  early_mid 4-9, middle 10-19, late_mid 20-25, last 26-27. Boundaries are kept
  as fractions of depth (4/28, 10/28, 20/28, 26/28) so other depths get the
  same split.
- data zones (high-error bands): maximal runs of >= 2 consecutive layers whose
  damage v_i exceeds mean(v) + K * std(v) (population std, K = 0.5 unless the
  user picks another). v_i is the metric itself for errors and ratios, and
  10^(-x/20), the relative RMS error, for a dB metric such as SQNR, so v_i
  always grows with damage. Bands are named by rank of their mean v_i:
  `high_error` is the worst band, then `high_error_2`, ... -- the name says how
  bad a band is, never where it is.

Every command computes zones through `layer_zones`, so the same scan, metric and
K give the same names and layers everywhere; `ZoneRule.describe` is the legend
each command prints under its zone table.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from srdd.errors import SrddError
from srdd.metrics import get_metric

ZONE_NAMES: tuple[str, ...] = ("first", "early_mid", "middle", "late_mid", "last")
ZONE_FRACTIONS: tuple[float, ...] = (4 / 28, 10 / 28, 20 / 28, 26 / 28)
DEFAULT_ZONE_METRIC = "relative_error"  # the metric the published band (layers 10-19) and multipliers used
DEFAULT_BAND_STD = 0.5
MIN_BAND_LAYERS = 2


@dataclass(frozen=True)
class Zone:
    name: str
    layers: tuple[int, ...]
    kind: str = "depth"  # "depth" (the five-zone split) or "data" (a high-error band)

    @property
    def label(self) -> str:
        return span(self.layers)


def span(layers: Sequence[int]) -> str:
    """'10-19' for a run of layers, '7' for one, '-' for none."""
    if not layers:
        return "-"
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])


@dataclass(frozen=True)
class ZoneRule:
    """Which metric and threshold define the data zones; recorded in every file that holds zones."""

    metric: str = DEFAULT_ZONE_METRIC
    band_std: float = DEFAULT_BAND_STD

    def __post_init__(self) -> None:
        get_metric(self.metric)
        if not (math.isfinite(self.band_std) and self.band_std >= 0):
            raise SrddError(f"--band-std must be a finite number >= 0, got {self.band_std}")

    def damage(self, values: Sequence[float]) -> list[float]:
        """v_i, growing with damage: the value itself, or 10^(-x/20) for a dB metric."""
        if get_metric(self.metric).higher_is_better:
            return [10.0 ** (-x / 20.0) for x in values]
        return [float(x) for x in values]

    def threshold(self, values: Sequence[float]) -> float:
        v = self.damage(values)
        return statistics.fmean(v) + self.band_std * statistics.pstdev(v)

    def describe(self) -> str:
        v = "10^(-SQNR/20)" if get_metric(self.metric).higher_is_better else self.metric
        text = (f"data zones: runs of >= {MIN_BAND_LAYERS} layers with v = {v} > mean + {self.band_std:g} std, "
                f"named by rank of mean v (high_error = worst); depth zones: the published five-zone split")
        if self.metric != "sqnr_db":  # the worst layers are ranked by SQNR: say why a band may hold good-SQNR layers
            text += (f"\n  bands follow {self.metric}, not the SQNR the worst layers are ranked by: a band can hold "
                     f"layers of high SQNR (many small values zeroed, little error energy); --zone-metric "
                     f"sqnr_db (calibrate: --metric sqnr_db) bands by SQNR")
        return text

    def to_dict(self) -> dict:
        return {"metric": self.metric, "band_std": self.band_std, "min_layers": MIN_BAND_LAYERS}


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def depth_zones(num_layers: int) -> list[Zone]:
    """The five-zone split scaled to `num_layers`; zones that come out empty are dropped."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    bounds = [0] + [_round_half_up(f * num_layers) for f in ZONE_FRACTIONS] + [num_layers]
    zones = []
    for name, lo, hi in zip(ZONE_NAMES, bounds[:-1], bounds[1:]):
        layers = tuple(range(lo, max(lo, hi)))
        if layers:
            zones.append(Zone(name, layers))
    return zones


def high_error_bands(values: Sequence[float], rule: ZoneRule = ZoneRule()) -> list[Zone]:
    """The data zones of one metric's per-layer values (raw, as in the scan), worst first."""
    if not values:
        return []
    v = rule.damage(values)
    cut = rule.threshold(values)
    runs: list[tuple[int, ...]] = []
    current: list[int] = []
    for i, x in enumerate(v + [-math.inf]):
        if x > cut:
            current.append(i)
            continue
        if len(current) >= MIN_BAND_LAYERS:
            runs.append(tuple(current))
        current = []
    runs.sort(key=lambda r: (-statistics.fmean(v[i] for i in r), -len(r), r[0]))
    return [Zone("high_error" if k == 0 else f"high_error_{k + 1}", layers, "data")
            for k, layers in enumerate(runs)]


def layer_zones(values: Mapping[str, Sequence[float]], rule: ZoneRule = ZoneRule()) -> list[Zone]:
    """Depth zones, then the data zones of `rule.metric` (`values` maps metric -> per-layer values)."""
    per_layer = values[rule.metric]
    return depth_zones(len(per_layer)) + high_error_bands(per_layer, rule)


def zone_of(layer: int, zones: Sequence[Zone], kind: str) -> str | None:
    """The name of the `kind` zone holding `layer`, if any."""
    return next((z.name for z in zones if z.kind == kind and layer in z.layers), None)


def zone_entries(zones: Sequence[Zone], values: Mapping[str, Sequence[float]]) -> list[dict]:
    """The zones as file entries: name, kind, layers and the mean of every metric over the zone."""
    return [{"name": z.name, "kind": z.kind, "layers": list(z.layers),
             **{m: statistics.fmean(v[i] for i in z.layers) for m, v in values.items()}} for z in zones]
