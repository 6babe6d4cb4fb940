"""The tables researchers used to write by hand, from any srdd.scan/v1 document."""

from __future__ import annotations

from collections.abc import Collection

from srdd.metrics import definitions, get_metric
from srdd.zones import ZoneRule, span

TABLE_METRICS = ("sqnr_db", "relative_error", "deadzone_ratio", "saturation_ratio")


def _row(cells: list[str], widths: list[int], left: Collection[int]) -> str:
    return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()


def table(header: list[str], rows: list[list[str]], left: Collection[int] = (0,)) -> str:
    """Columns right-aligned (numbers), except those in `left` (names, text)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [_row(header, widths, left), "  ".join("-" * w for w in widths)]
    lines += [_row(r, widths, left) for r in rows]
    return "\n".join(lines)


def render(doc: dict) -> str:
    fmt, model = doc["format"]["name"], doc["model"]["name"]
    cal = doc["calibration"]
    out = [f"srdd scan: {model} ({doc['model']['num_layers']} layers) under {fmt}, {doc['mode']} mode, "
           f"site {doc['primary_site']}; {cal['samples']} samples / {cal['tokens']} tokens"]
    rows = []
    for m in TABLE_METRICS:
        metric, s = get_metric(m), doc["summary"][m]
        spread = metric.format(s["std"]) if not metric.is_ratio else f"{100 * s['std']:.2f}%"
        rows.append([m, metric.format(s["min"]), metric.format(s["max"]),
                     f"{metric.format(s['mean'])} ± {spread}"])
    out += ["", "Overall (per-layer values)", table(["metric", "min", "max", "mean ± std"], rows),
            definitions(TABLE_METRICS)]
    zone_rows = [[z["name"], z["kind"], span(z["layers"])]
                 + [get_metric(m).format(z[m]) for m in TABLE_METRICS[:3]] for z in doc["zones"]]
    rule = ZoneRule(**{k: v for k, v in doc.get("zone_rule", {}).items() if k != "min_layers"})
    out += ["", "Zones (metric means over each zone's layers)",
            table(["zone", "kind", "layers", *TABLE_METRICS[:3]], zone_rows), "  " + rule.describe()]
    worst = [[str(w["layer"])] + [get_metric(m).format(w[m]) for m in TABLE_METRICS] for w in doc["worst_layers"]]
    out += ["", f"Worst layers (by {doc['rank_metric']})", table(["layer", *TABLE_METRICS], worst),
            f"  ranked by {doc['rank_metric']}, the primary metric; README 'Reading a scan' explains each column"]
    out += [f"warning: {w}" for w in doc.get("warnings", [])]
    return "\n".join(out)
