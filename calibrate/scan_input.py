"""Read a scan in either accepted layout into one per-layer table, validating every field.

Accepted layouts:

- `srdd.scan/v1` (DESIGN.md §4), metrics under `layers[i].block_output` (the
  published scan's site). A scan made without the block_output site is read
  from `layers[i].primary` (all linear inputs merged) and says so. A scan made
  with `--sensitivity` adds the `sensitivity` column (`layers[i].sensitivity.kl_mean`).
- the published verl-fork scanner (`scripts/srdd_quant_scanner.py`):
  `{config: {model_path, quant_type, num_layers, thresholds}, report: {summary,
  statistics, per_layer: [{layer_id, sqnr_db, deadzone_ratio, ...}]},
  recommendations, timestamp}`. It stores ratios as fractions (it prints them
  x100), exactly like srdd; a deadzone ratio above 1 is refused, not guessed.

Errors are `SrddError`s naming the offending field, e.g.
`layers[3].block_output.relative_error`. NaN/Infinity tokens (which Python's
json.dump writes by default) are kept by the parser and reported by field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from srdd.errors import SrddError
from srdd.scan.schema import MAX_LAYERS

METRICS = ("relative_error", "deadzone_ratio", "sqnr_db")  # required in every layer
OPTIONAL_METRICS = ("saturation_ratio",)
DAMAGE_METRIC = "sensitivity"
"""Each layer's output KL with only it quantized (`layers[i].sensitivity.kl_mean`, srdd scan --sensitivity)."""
SRDD_SCHEMA = "srdd.scan/v1"
SRDD_LAYOUT = "srdd.scan/v1"
VERL_LAYOUT = "verl-fork"


@dataclass(frozen=True)
class ScanTable:
    """One value per layer and metric, in layer order 0..L-1, whatever the input layout."""

    layout: str
    model: str
    fmt: str
    site: str
    values: dict[str, list[float]]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def num_layers(self) -> int:
        return len(self.values["relative_error"])


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SrddError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise SrddError(f"{where}: value is {value} (NaN/Infinity is not a measurement)")
    return float(value)


def _metric(value, where: str, metric: str) -> float:
    x = _number(value, where)
    if metric in ("relative_error", "deadzone_ratio", "saturation_ratio", DAMAGE_METRIC) and x < 0:
        raise SrddError(f"{where}: {x} is negative; {metric} cannot be")
    if metric in ("deadzone_ratio", "saturation_ratio") and x > 1:
        raise SrddError(f"{where}: {x} is above 1; {metric} is a fraction 0..1 in scan files "
                        "(a percentage was written?)")
    return x


def _mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        kind = "missing" if value is None else f"expected an object, got {type(value).__name__}"
        raise SrddError(f"{where}: {kind}")
    return value


def _reject_constant(token: str) -> float:
    # Keep NaN/Infinity as floats so the field that holds them is named by _number.
    return float(token)


def load_json(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SrddError(f"scan {path} does not exist or is not a file")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"), parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SrddError(f"scan {path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SrddError(f"scan {path}: expected a JSON object at the top level, got {type(doc).__name__}")
    return doc


def _declared_count(declared, where: str) -> int | None:
    if declared is None:
        return None
    if isinstance(declared, bool) or not isinstance(declared, int) or declared < 1:
        raise SrddError(f"{where}: expected a positive integer, got {declared!r}")
    _check_count(declared, where)
    return declared


def _check_count(n: int, where: str) -> None:
    """Bound a layer count before anything is sized by it (a corrupt 1e12 would allocate gigabytes)."""
    if n > MAX_LAYERS:
        raise SrddError(f"{where}: {n} layers is beyond any model (at most {MAX_LAYERS}); a corrupt file?")


def _check_ids(ids: list, where: str, key: str, declared: int | None, declared_where: str) -> None:
    """Layer ids must be the integers 0..L-1, each once (order in the file is free).

    L is the declared layer count when the file has one, else the number of entries.
    """
    for k, layer_id in enumerate(ids):
        if isinstance(layer_id, bool) or not isinstance(layer_id, int):
            raise SrddError(f"{where}[{k}].{key}: layer id must be an integer, got {layer_id!r}")
    seen: dict[int, int] = {}
    for k, layer_id in enumerate(ids):
        if layer_id in seen:
            raise SrddError(f"{where}[{k}].{key}: duplicated layer id {layer_id} (also at {where}[{seen[layer_id]}])")
        seen[layer_id] = k
    n = declared if declared is not None else len(ids)
    missing = sorted(set(range(n)) - set(ids))
    unexpected = sorted(i for i in ids if not 0 <= i < n)
    if missing or unexpected:
        basis = f"{declared_where} = {declared}" if declared is not None else f"{len(ids)} entries"
        raise SrddError(f"{where}: expected layers 0..{n - 1} ({basis}); "
                        + "; ".join(([f"missing layers {missing}"] if missing else [])
                                    + ([f"unexpected layer ids {unexpected}"] if unexpected else [])))


def _table(entries: list[tuple[int, dict, str]], n: int) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {m: [0.0] * n for m in METRICS}
    optional = {m for m in OPTIONAL_METRICS if all(m in e for _, e, _ in entries)}
    for m in optional:
        values[m] = [0.0] * n
    for layer_id, entry, where in entries:
        for m in (*METRICS, *sorted(optional)):
            if m not in entry:
                raise SrddError(f"{where}.{m}: missing")
            values[m][layer_id] = _metric(entry[m], f"{where}.{m}", m)
    return values


def _from_srdd(doc: dict) -> ScanTable:
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers:
        raise SrddError("layers: missing or empty (expected one entry per decoder layer)")
    _check_count(len(layers), "layers")
    for k, layer in enumerate(layers):
        _mapping(layer, f"layers[{k}]")
    model = _mapping(doc.get("model", {}), "model")
    declared = _declared_count(model.get("num_layers"), "model.num_layers")
    _check_ids([layer.get("layer") for layer in layers], "layers", "layer", declared, "model.num_layers")
    fmt = doc.get("format", {})
    fmt_name = _mapping(fmt, "format").get("name", "?")
    has_block = ["block_output" in layer for layer in layers]
    notes: list[str] = []
    if all(has_block):
        site = "block_output"
    elif not any(has_block) and all("primary" in layer for layer in layers):
        site = "primary"
        notes.append("this scan has no block_output site; using each layer's primary site "
                     "(its linear inputs merged)")
    else:
        k = has_block.index(False)
        raise SrddError(f"layers[{k}].block_output: missing")
    entries = [(layer["layer"], _mapping(layer[site], f"layers[{k}].{site}"), f"layers[{k}].{site}")
               for k, layer in enumerate(layers)]
    values = _table(entries, len(layers))
    if any("sensitivity" in layer for layer in layers):
        values[DAMAGE_METRIC] = _damage(layers)
    return ScanTable(SRDD_LAYOUT, str(model.get("name", "?")), str(fmt_name), site, values, tuple(notes))


def _damage(layers: list[dict]) -> list[float]:
    """The sensitivity column: every layer's, or an error naming the first layer without one."""
    out = [0.0] * len(layers)
    for k, layer in enumerate(layers):
        where = f"layers[{k}].sensitivity"
        out[layer["layer"]] = _metric(_mapping(layer.get("sensitivity"), where).get("kl_mean"),
                                      f"{where}.kl_mean", DAMAGE_METRIC)
    return out


def _from_verl(doc: dict) -> ScanTable:
    cfg = _mapping(doc.get("config"), "config")
    report = _mapping(doc.get("report"), "report")
    per_layer = report.get("per_layer")
    if not isinstance(per_layer, list) or not per_layer:
        raise SrddError("report.per_layer: missing or empty (expected one entry per decoder layer)")
    _check_count(len(per_layer), "report.per_layer")
    for k, entry in enumerate(per_layer):
        _mapping(entry, f"report.per_layer[{k}]")
    declared = _declared_count(cfg.get("num_layers"), "config.num_layers")
    _check_ids([e.get("layer_id") for e in per_layer], "report.per_layer", "layer_id", declared, "config.num_layers")
    entries = [(e["layer_id"], e, f"report.per_layer[{k}]") for k, e in enumerate(per_layer)]
    return ScanTable(VERL_LAYOUT, str(cfg.get("model_path", "?")), str(cfg.get("quant_type", "?")),
                     "block_output", _table(entries, len(per_layer)),
                     ("published verl-fork scanner layout (decoder-layer outputs, ratios as fractions)",))


def read_scan(path: Path) -> ScanTable:
    """Detect the layout, validate it and return the per-layer table."""
    doc = load_json(path)
    if "schema" in doc:
        schema = doc["schema"]
        if schema == SRDD_SCHEMA:
            return _from_srdd(doc)
        hint = " (that is a multipliers file, not a scan)" if schema == "srdd.noise/v1" else ""
        raise SrddError(f"schema: {schema!r} is not supported{hint}; expected {SRDD_SCHEMA!r} "
                        "or a verl-fork scan (no schema; keys config/report)")
    if "report" in doc or "config" in doc:
        return _from_verl(doc)
    raise SrddError(f"schema: missing; {path} is neither a {SRDD_SCHEMA} scan (needs 'schema') "
                    "nor a verl-fork scan (needs 'config' and 'report')")
