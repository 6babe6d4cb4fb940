"""CSV and PNG exports of a scan (per-layer profiles with the zones shaded)."""

from __future__ import annotations

from pathlib import Path

from srdd.jsonio import write_text_atomic
from srdd.metrics import get_metric

PLOT_METRICS = ("sqnr_db", "relative_error", "deadzone_ratio")


def layer_rows(doc: dict) -> list[dict]:
    rows = []
    for layer in doc["layers"]:
        row = {"layer": layer["layer"], **layer["primary"]}
        for name, site in layer.get("linear_inputs", {}).items():
            row[f"{name}.sqnr_db"] = site["sqnr_db"]
        rows.append(row)
    return rows


def write_csv(doc: dict, path: Path, *, force: bool = False) -> Path:
    import pandas as pd

    return write_text_atomic(path, pd.DataFrame(layer_rows(doc)).to_csv(index=False), force=force)


def write_plot(doc: dict, path: Path, *, force: bool = False) -> Path:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    axes[-1].set_xlabel("decoder layer (shaded: depth zones; red: high-error bands)")
    fig.suptitle(f"{doc['model']['name']} under {doc['format']['name']} ({doc['mode']})")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    from srdd.jsonio import ensure_writable

    path = ensure_writable(Path(path), force=force)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
    return path
