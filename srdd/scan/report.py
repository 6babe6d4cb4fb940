"""From accumulated sums to the srdd.scan/v1 document (DESIGN.md §4).

Layer-level tables, summary, zones and worst layers use one "primary" site
per layer: the decoder-layer output (the published scan's site) when it was
scanned, else all linear inputs of the layer merged. Ratios stay fractions.
The model-level `fidelity` block and the per-layer `sensitivity` (with its
rank correlations against the local metrics) are additive fields of
srdd.scan/v1: readers that do not know them are unaffected.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from functools import reduce

from srdd import __version__
from srdd.errors import SrddError
from srdd.formats import QuantStats, get_format
from srdd.metrics import get_metric
from srdd.scan.accumulate import LayerStats, ScanStats
from srdd.scan.fidelity import OutputStats
from srdd.scan.sensitivity import NOTE, SENSITIVITY_KEY, rank_correlations, sensitivity_values
from srdd.zones import ZoneRule, layer_zones, zone_entries

SCHEMA = "srdd.scan/v1"
SUMMARY_METRICS = ("sqnr_db", "relative_error", "deadzone_ratio", "saturation_ratio", "mse")
RANK_METRIC = "sqnr_db"
WORST_COUNT = 10


def _site(s: QuantStats) -> dict:
    return {**s.metrics(), "sums": s.to_dict()}


def primary_stats(layer: LayerStats, sites: tuple[str, ...]) -> QuantStats:
    if "block_output" in sites:
        return layer.block_output
    return reduce(QuantStats.merge, layer.linear_inputs.values(), QuantStats.empty())


def _summary(values: dict[str, list[float]]) -> dict:
    return {m: {"min": min(v), "max": max(v), "mean": statistics.fmean(v),
                "std": statistics.pstdev(v) if len(v) > 1 else 0.0}
            for m, v in values.items()}


def format_block(key: str, cfg) -> dict:
    spec = get_format(key, **cfg.options_for(key))
    params = {k: (v.value if hasattr(v, "value") else v) for k, v in vars(spec).items()
              if k in ("scale_mode", "per_tensor_scale", "group_size", "block_size")}
    params.setdefault("block_size", getattr(spec, "block_size", None))
    return {"name": key, **params}


def build_report(stats: ScanStats, key: str, cfg, model_info: dict, calibration: dict, *,
                 fidelity: OutputStats, fidelity_label: str, sensitivity: list[OutputStats] | None) -> dict:
    layers_out = []
    values: dict[str, list[float]] = {m: [] for m in SUMMARY_METRICS}
    for index, layer in enumerate(stats.layers[key]):
        entry: dict = {"layer": index}
        if "block_output" in cfg.sites:
            entry["block_output"] = _site(layer.block_output)
        if "linear_input" in cfg.sites and layer.linear_inputs:
            entry["linear_inputs"] = {n: _site(s) for n, s in sorted(layer.linear_inputs.items())}
        if "weight" in cfg.sites:
            entry["weights"] = {n: _site(s) for n, s in sorted(layer.weights.items())}
        primary = primary_stats(layer, cfg.sites).metrics()
        entry["primary"] = {m: primary[m] for m in SUMMARY_METRICS}
        for m in SUMMARY_METRICS:
            values[m].append(primary[m])
        if sensitivity is not None:
            entry["sensitivity"] = sensitivity[index].metrics()
        layers_out.append(entry)

    rank = get_metric(RANK_METRIC)
    rule = ZoneRule()
    order = sorted(range(len(layers_out)), key=lambda i: rank.badness(values[RANK_METRIC][i]), reverse=True)
    worst = [{"layer": i, **{m: values[m][i] for m in SUMMARY_METRICS}} for i in order[:WORST_COUNT]]
    nonfinite = sum(primary_stats(layer, cfg.sites).nonfinite for layer in stats.layers[key])
    capped = any(l_["block_output"]["sqnr_capped"] for l_ in layers_out if "block_output" in l_)
    doc = {
        "schema": SCHEMA,
        "tool_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": model_info,
        "format": format_block(key, cfg),
        "mode": cfg.mode.value,
        "sites": list(cfg.sites),
        "primary_site": "block_output" if "block_output" in cfg.sites else "linear_input",
        "rank_metric": RANK_METRIC,
        "calibration": calibration,
        "layers": layers_out,
        "summary": _summary(values),
        "zone_rule": rule.to_dict(),
        "zones": zone_entries(layer_zones(values, rule), values),
        "worst_layers": worst,
        "fidelity": {"quantized": fidelity_label, **fidelity.metrics()},
        "warnings": _warnings(nonfinite, capped) + _fidelity_warnings(fidelity, sensitivity),
    }
    if sensitivity is not None:
        doc["sensitivity"] = {"metric": SENSITIVITY_KEY, "quantized": f"{fidelity_label}, one decoder layer at a time",
                              "rank_correlation": rank_correlations(doc), "note": NOTE}
    return doc


def layer_values(doc: dict) -> dict[str, list[float]]:
    """metric -> per-layer values of a scan document's primary site, and its sensitivity when it has one."""
    values = {m: [layer["primary"][m] for layer in doc["layers"]] for m in SUMMARY_METRICS}
    damage = sensitivity_values(doc)
    if damage is not None:
        values["sensitivity"] = damage
    return values


def with_zones(doc: dict, rule: ZoneRule) -> dict:
    """`doc` with its zones recomputed under `rule`, so a scan written by any srdd version shows today's zones."""
    values = layer_values(doc)
    if rule.metric not in values:
        raise SrddError(f"--zone-metric {rule.metric}: this scan has no per-layer {rule.metric}; "
                        "make the scan with srdd scan --sensitivity")
    return {**doc, "zone_rule": rule.to_dict(), "zones": zone_entries(layer_zones(values, rule), values)}


def with_correlations(doc: dict) -> dict:
    """`doc` with its rank correlations recomputed, so a scan shows today's definition whatever wrote it."""
    if "sensitivity" not in doc:
        return doc
    return {**doc, "sensitivity": {**doc["sensitivity"], "rank_correlation": rank_correlations(doc), "note": NOTE}}


def _fidelity_warnings(fidelity: OutputStats, sensitivity: list[OutputStats] | None) -> list[str]:
    out = []
    if fidelity.tokens == 0:
        out.append("no token had a next token to predict (--max-tokens 1?): the fidelity block has no statistics")
    bad = fidelity.nonfinite + sum(s.nonfinite for s in sensitivity or [])
    if bad:
        out.append(f"{bad} scored tokens had NaN/Inf logits; they are counted in 'nonfinite_tokens' and excluded "
                   "from the fidelity and sensitivity statistics")
    return out


def _warnings(nonfinite: int, capped: bool) -> list[str]:
    out = []
    if nonfinite:
        out.append(f"{nonfinite} activation values were NaN/Inf (or in a block poisoned by one); "
                   "they are counted in 'nonfinite' and excluded from every metric")
    if capped:
        out.append("some SQNR values had zero error and are reported at the finite cap")
    return out
