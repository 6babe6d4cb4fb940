"""The report's figures as PNG bytes (matplotlib, Agg)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from reports.runs import RunRecord  # noqa: E402


def _label(name: str) -> str:
    """A run name as literal text: matplotlib would parse `$...$` in it as mathtext (and can fail on it)."""
    return str(name).replace("$", r"\$")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def layer_profiles(runs: list[RunRecord], metric: str) -> bytes:
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(runs[0].pre, color="black", lw=2, label="before (first run)")
    for r in runs:
        ax.plot([p + d for p, d in zip(r.pre, r.delta)], lw=1, alpha=0.8, label=f"after: {_label(r.name)}")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel(metric)
    ax.set_title(f"per-layer {metric} before and after training")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _png(fig)


def trajectories(runs: list[RunRecord]) -> bytes:
    fig, ax = plt.subplots(figsize=(9, 4))
    for r in runs:
        steps, acc = zip(*r.trajectory)
        ax.plot(steps, [100 * a for a in acc], marker="o", ms=3, label=_label(r.name))
    ax.set_xlabel("step")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("validation accuracy (greedy, no noise, training quantization)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    return _png(fig)


def delta_vs_accuracy(xs: list[float], ys: list[float], names: list[str], metric: str) -> bytes:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(xs, [100 * y for y in ys])
    for x, y, n in zip(xs, ys, names):
        ax.annotate(_label(n), (x, 100 * y), fontsize=7)
    if len(xs) >= 2 and np.ptp(xs) > 0:
        slope, icept = np.polyfit(xs, [100 * y for y in ys], 1)
        grid = np.linspace(min(xs), max(xs), 20)
        ax.plot(grid, slope * grid + icept, color="red", lw=1, label=f"fit: {slope:.3g} x + {icept:.3g}")
        ax.legend(fontsize=8)
    ax.set_xlabel(f"mean change of {metric} over layers")
    ax.set_ylabel("final accuracy (%)")
    ax.grid(alpha=0.3)
    return _png(fig)
