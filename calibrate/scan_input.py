"""Read a scan in either layout into one per-layer table, validating every field.

Accepted: srdd's own `srdd.scan/v1`, and the layout written by the published
verl-fork scanner ({config, report: {per_layer: [...]}, recommendations,
timestamp}). Errors name the offending field, e.g. `layers[3].block_output.sqnr_db`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from srdd.errors import SrddError

METRICS = ("relative_error", "deadzone_ratio", "sqnr_db")
SRDD_SCHEMA = "srdd.scan/v1"
PUBLISHED = "verl-fork"


@dataclass(frozen=True)
class ScanTable:
    layout: str
    model: str
    fmt: str
    values: dict[str, list[float]]  # metric -> value per layer, layer order
    note: str = ""

    @property
    def num_layers(self) -> int:
        return len(next(iter(self.values.values())))


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SrddError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise SrddError(f"{where}: value is {value} (NaN/Infinity is not a measurement)")
    return float(value)


def _load(path: Path) -> dict:
    if not path.is_file():
        raise SrddError(f"scan {path} does not exist")
    try:
        # parse_constant keeps NaN/Infinity tokens as floats so they are reported by field below
        doc = json.loads(path.read_text(encoding="utf-8"), parse_constant=float)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SrddError(f"scan {path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SrddError(f"scan {path}: expected a JSON object at the top level")
    return doc


def _check_ids(ids: list, where: str) -> list[int]:
    for i, layer_id in enumerate(ids):
        if isinstance(layer_id, bool) or not isinstance(layer_id, int):
            raise SrddError(f"{where}[{i}]: layer id must be an integer, got {layer_id!r}")
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise SrddError(f"{where}: duplicated layer ids {dupes}")
    missing = sorted(set(range(len(ids))) - set(ids))
    if missing:
        raise SrddError(f"{where}: layer ids must be 0..{len(ids) - 1}; missing layers {missing}")
    return ids


def _from_srdd(doc: dict) -> ScanTable:
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers:
        raise SrddError("layers: missing or empty")
    ids = _check_ids([layer.get("layer") if isinstance(layer, dict) else None for layer in layers], "layers")
    num = doc.get("model", {}).get("num_layers")
    if num is not None and num != len(layers):
        raise SrddError(f"model.num_layers is {num} but layers holds {len(layers)} entries")
    values: dict[str, list[float]] = {m: [0.0] * len(layers) for m in METRICS}
    for i, layer in zip(ids, layers):
        site = "block_output" if "block_output" in layer else "primary"
        if not isinstance(layer.get(site), dict):
            raise SrddError(f"layers[{i}].block_output: missing")
        for m in METRICS:
            if m not in layer[site]:
                raise SrddError(f"layers[{i}].{site}.{m}: missing")
            values[m][i] = _number(layer[site][m], f"layers[{i}].{site}.{m}")
    return ScanTable("srdd.scan/v1", doc.get("model", {}).get("name", "?"),
                     doc.get("format", {}).get("name", "?"), values)


def _from_published(doc: dict) -> ScanTable:
    per_layer = doc.get("report", {}).get("per_layer") if isinstance(doc.get("report"), dict) else None
    if not isinstance(per_layer, list) or not per_layer:
        raise SrddError("report.per_layer: missing or empty")
    ids = _check_ids([e.get("layer_id") if isinstance(e, dict) else None for e in per_layer], "report.per_layer")
    num = doc.get("config", {}).get("num_layers")
    if num is not None and num != len(per_layer):
        raise SrddError(f"config.num_layers is {num} but report.per_layer holds {len(per_layer)} entries")
    values: dict[str, list[float]] = {m: [0.0] * len(per_layer) for m in METRICS}
    for k, (i, entry) in enumerate(zip(ids, per_layer)):
        for m in METRICS:
            if m not in entry:
                raise SrddError(f"report.per_layer[{k}].{m}: missing")
            values[m][i] = _number(entry[m], f"report.per_layer[{k}].{m}")
    note = "detected the published verl-fork scanner layout"
    if max(values["relative_error"] + values["deadzone_ratio"]) > 1.0:
        values["relative_error"] = [v / 100 for v in values["relative_error"]]
        values["deadzone_ratio"] = [v / 100 for v in values["deadzone_ratio"]]
        note += "; its ratios are percentages and were converted to fractions"
    cfg = doc.get("config", {})
    return ScanTable(PUBLISHED, str(cfg.get("model_path", "?")), str(cfg.get("quant_type", "?")), values, note)


def read_scan(path: Path) -> ScanTable:
    doc = _load(Path(path))
    if doc.get("schema") == SRDD_SCHEMA:
        return _from_srdd(doc)
    if "schema" in doc:
        raise SrddError(f"schema: {doc['schema']!r} is not supported (expected {SRDD_SCHEMA!r})")
    if "report" in doc and "config" in doc:
        return _from_published(doc)
    raise SrddError(f"{path}: neither a srdd.scan/v1 file (no 'schema') nor a verl-fork scan (no 'report'/'config')")
