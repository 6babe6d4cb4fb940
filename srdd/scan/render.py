"""The tables researchers used to write by hand, from any srdd.scan/v1 document."""

from __future__ import annotations

from collections.abc import Collection

from srdd.metrics import definitions, get_metric
from srdd.scan.sensitivity import LOCAL_METRICS, SENSITIVITY_KEY, best_predictor, sensitivity_values
from srdd.zones import ZoneRule, span

TABLE_METRICS = ("sqnr_db", "relative_error", "deadzone_ratio", "saturation_ratio")
WORST_SHOWN = 10


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
    zone_metrics = (*TABLE_METRICS[:3], *(["sensitivity"] if all("sensitivity" in z for z in doc["zones"]) else []))
    zone_rows = [[z["name"], z["kind"], span(z["layers"])]
                 + [get_metric(m).format(z[m]) for m in zone_metrics] for z in doc["zones"]]
    rule = ZoneRule(**{k: v for k, v in doc.get("zone_rule", {}).items() if k != "min_layers"})
    out += ["", "Zones (metric means over each zone's layers)",
            table(["zone", "kind", "layers", *zone_metrics], zone_rows), "  " + rule.describe()]
    worst = [[str(w["layer"])] + [get_metric(m).format(w[m]) for m in TABLE_METRICS] for w in doc["worst_layers"]]
    out += ["", f"Worst layers (by {doc['rank_metric']})", table(["layer", *TABLE_METRICS], worst),
            f"  ranked by {doc['rank_metric']}, the primary metric; README 'Reading a scan' explains each column"]
    out += _fidelity(doc)
    out += [f"warning: {w}" for w in doc.get("warnings", [])]
    return "\n".join(out)


def _fidelity(doc: dict) -> list[str]:
    """The model-level damage and, with --sensitivity, the layers that do the most of it (absent in older files)."""
    f = doc.get("fidelity")
    if f is None or "kl_mean" not in f:
        return []
    ppl = " -> ".join("-" if f[k] is None else f"{f[k]:.4g}" for k in ("perplexity_fp", "perplexity_q"))
    ratio = "-" if f["perplexity_ratio"] is None else f"{f['perplexity_ratio']:.4f}"
    out = ["", f"Model fidelity: fp vs {f['quantized']}, next-token distributions over {f['tokens']} tokens",
           table(["KL mean", "KL p99", "KL max", "top-1 agreement", "perplexity fp -> q", "ratio"],
                 [[f"{f['kl_mean']:.4g}", f"{f['kl_p99']:.4g}", f"{f['kl_max']:.4g}",
                   f"{100 * f['top1_agreement']:.2f}%", ppl, ratio]]),
           "  KL(P_fp || P_q) per token in nats (llama.cpp's --kl-divergence definitions); top-1: the two "
           "argmaxes agree; perplexity exp(mean NLL of the actual next token)"]
    sens = doc.get("sensitivity")
    if sens is None or sensitivity_values(doc) is None:
        return out
    layers = sorted(doc["layers"], key=lambda entry: entry["sensitivity"][SENSITIVITY_KEY], reverse=True)
    rows = [[str(entry["layer"]), f"{entry['sensitivity'][SENSITIVITY_KEY]:.4g}",
             f"{100 * entry['sensitivity']['top1_agreement']:.2f}%"]
            + [get_metric(m).format(entry["primary"][m]) for m in LOCAL_METRICS] for entry in layers[:WORST_SHOWN]]
    out += ["", f"Sensitivity: output KL with only that layer quantized ({sens['quantized']}), most damaging first",
            table(["layer", "KL mean", "top-1", *LOCAL_METRICS], rows)]
    corr = sens.get("rank_correlation") or {}
    rho = [[m, "-" if c["rho"] is None else f"{c['rho']:+.3f}", str(c["n"])] for m, c in corr.items()]
    best = best_predictor(corr)
    out += ["", "Does local error predict damage? (rank correlation across layers)",
            table(["local metric", "Spearman rho", "layers"], rho),
            f"  {sens['note']}; " + (f"best: {best}" if best else "no local metric ranks the layers like the damage")]
    return out
