"""Zones and the `srdd.noise/v1` document (DESIGN.md §4) that rin_train reads as `noise.multipliers_file`.

rin_train reads `schema` and `layer_multipliers` ({layer: float} for every
layer); everything else records where the numbers came from and what they mean.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from decimal import Decimal

from calibrate.multipliers import LayerMultiplier, Mode, Statistics, Tiers, basis_description
from calibrate.scan_input import ScanTable
from srdd import __version__
from srdd.zones import Zone, ZoneRule, layer_zones
from srdd.zones import zone_entries as metric_means

SCHEMA = "srdd.noise/v1"
TARGET_KINDS = ("linear", "rmsnorm")


def calibrate_zones(scan: ScanTable, rule: ZoneRule) -> list[Zone]:
    """The zones `srdd scan` and `srdd show` report for this scan under the same rule."""
    return layer_zones(scan.values, rule)


def high_error_band(zones: list[Zone]) -> tuple[int, ...]:
    """The worst data zone's layers (what targeted noise perturbs), or () when the scan has none."""
    return next((z.layers for z in zones if z.kind == "data" and z.name == "high_error"), ())


def no_band_advice(scan: ScanTable, rule: ZoneRule) -> str:
    """What to change when a scan has no high-error band: --band-std only helps if a lower one finds a band."""
    at_zero = high_error_band(layer_zones(scan.values, ZoneRule(rule.metric, 0.0)))
    if at_zero:
        return f"lower --band-std (at 0 the band is layers {at_zero[0]}-{at_zero[-1]})"
    return (f"no --band-std gives one: no two neighbouring layers are both above the mean by {rule.metric}; "
            "try --metric sqnr_db, or a scan over more calibration prompts")


def zone_entries(zones: list[Zone], scan: ScanTable, mults: list[LayerMultiplier]) -> list[dict]:
    """srdd's zone entries, rounded for the YAML, with each zone's mean multiplier."""
    out = metric_means(zones, scan.values)
    for entry in out:
        entry.update({m: round(entry[m], 8) for m in scan.values})
        entry["multiplier_mean"] = round(statistics.fmean(float(mults[i].multiplier) for i in entry["layers"]), 4)
    return out


def _stat(x: Decimal) -> float:
    return float(x)


def build_document(*, scan_path: str, scan_sha256: str, scan: ScanTable, metric: str, mode: Mode,
                   clip: tuple[Decimal, Decimal] | None, tiers: Tiers | None, rule: ZoneRule,
                   st: Statistics, mults: list[LayerMultiplier], zones: list[Zone],
                   targets: list[str], exclude: list[str], sigma: dict | None) -> dict:
    doc = {
        "schema": SCHEMA,
        "tool_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"path": scan_path, "sha256": scan_sha256, "layout": scan.layout,
                   "model": scan.model, "format": scan.fmt, "site": scan.site, "num_layers": scan.num_layers},
        "metric": metric,
        "basis": basis_description(metric),
        "mode": mode.value,
        "rounding": "2 decimals, halves away from zero, on the exact decimal value",
        "clip": [float(clip[0]), float(clip[1])] if clip else None,
        "statistics": {"mean": _stat(st.mean), "std": _stat(st.std), "min": _stat(st.minimum),
                       "max": _stat(st.maximum)},
        "zone_rule": rule.to_dict(),
        "band_threshold": {"std": rule.band_std, "value": rule.threshold(scan.values[metric])},
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
