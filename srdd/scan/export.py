"""CSV and PNG exports of a scan (per-layer profiles with the zones shaded)."""

from __future__ import annotations

from pathlib import Path

from srdd.jsonio import write_bytes_atomic, write_text_atomic
from srdd.metrics import get_metric

PLOT_METRICS = ("sqnr_db", "relative_error", "deadzone_ratio")


FORWARD_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _forward_order(name: str) -> tuple[int, str]:
    """Llama-family linears in the order a decoder layer runs them; others after, by name."""
    leaf = name.rpartition(".")[2]
    return (FORWARD_ORDER.index(leaf) if leaf in FORWARD_ORDER else len(FORWARD_ORDER), name)


def shared_inputs(doc: dict) -> list[list[str]]:
    """Linear layers grouped by input activation: q/k/v_proj (and gate/up_proj) read the same tensor.

    Two linears share a group when their input statistics are identical in every
    layer, so the CSV holds one column per distinct input instead of three equal ones.
    """
    names = sorted(dict.fromkeys(n for layer in doc["layers"] for n in layer.get("linear_inputs", {})),
                   key=_forward_order)

    def sums(layer: dict, name: str):
        return layer.get("linear_inputs", {}).get(name, {}).get("sums")

    groups: list[list[str]] = []
    for name in names:
        home = next((g for g in groups if all(sums(l_, g[0]) == sums(l_, name) for l_ in doc["layers"])), None)
        if home is None:
            groups.append([name])
        else:
            home.append(name)
    return groups


def input_column(group: list[str], metric: str) -> str:
    """'input_sqnr_db:self_attn.q_proj/k_proj/v_proj': the input activation of the listed linears."""
    parent, _, _ = group[0].rpartition(".")
    if parent and all(n.startswith(parent + ".") for n in group):
        names = f"{parent}." + "/".join(n[len(parent) + 1:] for n in group)
    else:
        names = "/".join(group)
    return f"input_{metric}:{names}"


def layer_rows(doc: dict) -> list[dict]:
    groups = shared_inputs(doc)
    rows = []
    for layer in doc["layers"]:
        row = {"layer": layer["layer"], **layer["primary"]}
        if "sensitivity" in layer:
            row["sensitivity"] = layer["sensitivity"].get("kl_mean")
        for group in groups:
            site = layer.get("linear_inputs", {}).get(group[0])
            if site is not None:
                row[input_column(group, "sqnr_db")] = site["sqnr_db"]
        rows.append(row)
    return rows


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A text cell a spreadsheet would run as a formula (`=HYPERLINK(...)` from a scan's keys) gets a leading
    quote, as OWASP advises for CSV injection; numbers, negative ones included, stay numbers."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def write_csv(doc: dict, path: Path, *, force: bool = False) -> Path:
    import pandas as pd

    frame = pd.DataFrame(layer_rows(doc))
    frame.columns = [csv_cell(str(c)) for c in frame.columns]
    return write_text_atomic(path, frame.map(csv_cell).to_csv(index=False), force=force)


def write_plot(doc: dict, path: Path, *, force: bool = False) -> Path:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    layers = [l_["layer"] for l_ in doc["layers"]]
    fig, axes = plt.subplots(len(PLOT_METRICS), 1, figsize=(9, 7.5), sharex=True)
    colors = ["#f2f2f2", "#e0e8f5"]
    for ax, m in zip(axes, PLOT_METRICS):
        metric = get_metric(m)
        values = [l_["primary"][m] * (100 if metric.is_ratio else 1) for l_ in doc["layers"]]
        for k, zone in enumerate(z for z in doc["zones"] if z["kind"] == "depth"):
            ax.axvspan(zone["layers"][0] - 0.5, zone["layers"][-1] + 0.5, color=colors[k % 2], zorder=0)
        for zone in (z for z in doc["zones"] if z["kind"] == "data"):
            ax.axvspan(zone["layers"][0] - 0.5, zone["layers"][-1] + 0.5, color="#f7c6c6", alpha=0.5, zorder=0)
        ax.plot(layers, values, marker="o", ms=3, color="#1f4e9c")
        ax.set_ylabel(f"{m} ({'%' if metric.is_ratio else 'dB' if m.endswith('db') else ''})")
        ax.grid(alpha=0.3)
    for zone in doc["zones"]:
        middle = (zone["layers"][0] + zone["layers"][-1]) / 2
        top = zone["kind"] == "depth"
        axes[0].annotate(zone["name"], (middle, 1.0 if top else 0.0), xycoords=("data", "axes fraction"),
                         xytext=(0, 2 if top else 3), textcoords="offset points", ha="center",
                         va="bottom", fontsize=7, color="#555555" if top else "#a33")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    by = doc.get("zone_rule", {}).get("metric", "")
    axes[-1].set_xlabel(f"decoder layer (grey/blue: depth zones; red: high-error zones{' by ' + by if by else ''}, "
                        "named in the top panel)")
    fig.suptitle(f"{doc['model']['name']} under {doc['format']['name']} ({doc['mode']})", y=0.995)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return write_bytes_atomic(Path(path), buf.getvalue(), force=force)
