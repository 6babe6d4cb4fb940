"""Zones and the `srdd.noise/v1` document (DESIGN.md §4) that rin_train reads as `noise.multipliers_file`.

rin_train reads `schema` and `layer_multipliers` ({layer: float} for every
layer); everything else records where the numbers came from and what they mean.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from calibrate.multipliers import LayerMultiplier, Mode, Statistics, Tiers, basis_description
from calibrate.scan_input import ScanTable
from srdd import __version__
from srdd.zones import depth_zones, high_error_bands

SCHEMA = "srdd.noise/v1"
TARGET_KINDS = ("linear", "rmsnorm")


@dataclass(frozen=True)
class ZoneRow:
    name: str
    kind: str  # "depth" (the published five-zone split) or "data" (contiguous high-error band)
    layers: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"{self.layers[0]}-{self.layers[-1]}" if len(self.layers) > 1 else str(self.layers[0])


def band_threshold(st: Statistics, band_std: float) -> Decimal:
    return st.mean + Decimal(repr(band_std)) * st.std


def find_zones(v: list[Decimal], st: Statistics, band_std: float) -> list[ZoneRow]:
    """Depth zones, then the data-driven bands: runs of >= 2 layers with v_i > mean + band_std * std."""
    zones = [ZoneRow(z.name, "depth", z.layers) for z in depth_zones(len(v))]
    bands = high_error_bands([float(x) for x in v], threshold=float(band_threshold(st, band_std)))
    return zones + [ZoneRow(z.name, "data", z.layers) for z in bands]


def high_error_band(zones: list[ZoneRow]) -> tuple[int, ...]:
    return next((z.layers for z in zones if z.kind == "data" and z.name == "high_error"), ())


def zone_entries(zones: list[ZoneRow], scan: ScanTable, mults: list[LayerMultiplier]) -> list[dict]:
    out = []
    for z in zones:
        entry: dict = {"name": z.name, "kind": z.kind, "layers": list(z.layers)}
        for metric, values in scan.values.items():
            entry[metric] = round(statistics.fmean(values[i] for i in z.layers), 8)
        entry["multiplier_mean"] = round(statistics.fmean(float(mults[i].multiplier) for i in z.layers), 4)
        out.append(entry)
    return out


def _stat(x: Decimal) -> float:
    return float(x)


def build_document(*, scan_path: Path, scan_sha256: str, scan: ScanTable, metric: str, mode: Mode,
                   clip: tuple[Decimal, Decimal] | None, tiers: Tiers | None, band_std: float,
                   st: Statistics, mults: list[LayerMultiplier], zones: list[ZoneRow],
                   targets: list[str], exclude: list[str], sigma: dict | None) -> dict:
    doc = {
        "schema": SCHEMA,
        "tool_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"path": str(Path(scan_path).resolve()), "sha256": scan_sha256, "layout": scan.layout,
                   "model": scan.model, "format": scan.fmt, "site": scan.site, "num_layers": scan.num_layers},
        "metric": metric,
        "basis": basis_description(metric),
        "mode": mode.value,
        "rounding": "2 decimals, halves away from zero, on the exact decimal value",
        "clip": [float(clip[0]), float(clip[1])] if clip else None,
        "statistics": {"mean": _stat(st.mean), "std": _stat(st.std), "min": _stat(st.minimum),
                       "max": _stat(st.maximum)},
        "band_threshold": {"std": band_std, "value": float(band_threshold(st, band_std))},
    }
    if mode is Mode.TIERS:
        tiers = tiers or Tiers()
        doc["tiers"] = {"cuts_z": [float(c) for c in tiers.cuts], "values": [float(v) for v in tiers.values]}
    doc["layer_multipliers"] = {m.layer: float(m.multiplier) for m in mults}
    doc["zones"] = zone_entries(zones, scan, mults)
    doc["target_modules"] = list(targets)
    doc["exclude_patterns"] = list(exclude)
    if sigma is not None:
        doc["sigma"] = sigma
    return doc
