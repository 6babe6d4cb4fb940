"""Layer zones: the published depth-scaled five-zone split and data-driven bands.

The published study split 28 layers as first 0-3, early_mid 4-9, middle 10-19,
late_mid 20-25, last 26-27. Boundaries are kept as fractions of depth
(4/28, 10/28, 20/28, 26/28) so other depths get the same split.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

ZONE_NAMES: tuple[str, ...] = ("first", "early_mid", "middle", "late_mid", "last")
ZONE_FRACTIONS: tuple[float, ...] = (4 / 28, 10 / 28, 20 / 28, 26 / 28)


@dataclass(frozen=True)
class Zone:
    name: str
    layers: tuple[int, ...]

    @property
    def label(self) -> str:
        if not self.layers:
            return "-"
        return f"{self.layers[0]}-{self.layers[-1]}" if len(self.layers) > 1 else str(self.layers[0])


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


def high_error_bands(badness: Sequence[float], *, min_length: int = 2,
                     threshold: float | None = None) -> list[Zone]:
    """Maximal contiguous runs of layers whose badness exceeds `threshold` (default: the mean).

    `badness` grows with damage (use `Metric.badness`). Bands are ordered by
    total excess over the mean, largest first, and named `high_error`,
    `high_error_2`, ... so the first is the band a "targeted" run perturbs.
    """
    values = list(badness)
    if not values:
        return []
    mean = sum(values) / len(values)
    cut = mean if threshold is None else threshold
    runs: list[tuple[float, tuple[int, ...]]] = []
    current: list[int] = []
    for i, v in enumerate(values + [-math.inf]):
        if v > cut:
            current.append(i)
            continue
        if len(current) >= min_length:
            runs.append((sum(values[j] - mean for j in current), tuple(current)))
        current = []
    runs.sort(key=lambda r: (-r[0], r[1][0]))
    return [
        Zone("high_error" if k == 0 else f"high_error_{k + 1}", layers)
        for k, (_, layers) in enumerate(runs)
    ]


def zone_of(layer: int, zones: Sequence[Zone]) -> str | None:
    for zone in zones:
        if layer in zone.layers:
            return zone.name
    return None
