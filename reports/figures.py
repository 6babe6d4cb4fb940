"""The report's figures as PNG bytes (matplotlib, Agg).

Runs of one group (configs equal but for the seed) share a colour and differ
by marker, so a reader sees the groups first and the seeds second; nothing is
labelled point by point, which is what made names pile up on each other.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from reports.runs import SEED_SUFFIX, RunRecord  # noqa: E402
from reports.stats import SMALL_N  # noqa: E402
from srdd.zones import depth_zones  # noqa: E402

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
ZONE_SHADES = ("#f4f4f4", "#e3eaf6")


def _label(name: str) -> str:
    """A run name as literal text: matplotlib would parse `$...$` in it as mathtext (and can fail on it)."""
    return str(name).replace("$", r"\$")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", pad_inches=0.15)  # legends outside the axes too
    plt.close(fig)
    return buf.getvalue()


def _accuracy_axis(ax) -> None:
    """Accuracy in % never leaves [0, 100]; equal values get a 10-point window instead of a ±0.05 one."""
    lo, hi = ax.get_ylim()
    if hi - lo < 1.0:
        mid = (lo + hi) / 2
        lo, hi = mid - 5, mid + 5
    ax.set_ylim(max(lo, -1.0), min(hi, 101.0))


def _styles(names: Sequence[str]) -> dict[str, tuple[str, str, str]]:
    """run name -> (group, colour, marker): one colour per group, one marker per seed within it."""
    groups = list(dict.fromkeys(SEED_SUFFIX.sub("", n) for n in names))
    cmap = plt.get_cmap("tab10")
    seen: dict[str, int] = {}
    out = {}
    for name in names:
        group = SEED_SUFFIX.sub("", name)
        k = seen.get(group, 0)
        seen[group] = k + 1
        out[name] = (group, cmap(groups.index(group) % 10), MARKERS[k % len(MARKERS)])
    return out


def _runs_label(names: Sequence[str]) -> str:
    """A short name for the runs sharing a before-training scan: their seed when they share one, else a count.
    Listing every run made one legend line wider than the figure."""
    seeds = {m.group(0) if (m := SEED_SUFFIX.search(n)) else None for n in names}
    if len(names) == 1:
        return _label(names[0])
    if len(seeds) == 1 and None not in seeds:
        return f"the {len(names)} runs named *{seeds.pop()}"
    return f"{len(names)} runs ({_label(names[0])}, ...)"


def _shade_depth_zones(axes, num_layers: int) -> Patch:
    """Alternate shading of the five depth zones, named above the top axis; returns the legend handle."""
    zones = depth_zones(num_layers)
    for ax in axes:
        for k, zone in enumerate(zones):
            ax.axvspan(zone.layers[0] - 0.5, zone.layers[-1] + 0.5, color=ZONE_SHADES[k % 2], zorder=0)
    for zone in zones:
        axes[0].annotate(zone.name, ((zone.layers[0] + zone.layers[-1]) / 2, 1.0),
                         xycoords=("data", "axes fraction"), xytext=(0, 2), textcoords="offset points",
                         ha="center", va="bottom", fontsize=7, color="#555555")
    return Patch(facecolor=ZONE_SHADES[1], edgecolor="#bbbbbb", label="depth zones (shaded alternately)")


def layer_profiles(runs: list[RunRecord], metric: str) -> bytes:
    """Top: each distinct before-training profile. Bottom: every run's own change (after - before) per layer."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True,
                                      gridspec_kw={"height_ratios": [1, 1.4]})
    if not runs:
        bottom.text(0.5, 0.5, "no valid runs", ha="center", transform=bottom.transAxes)
        return _png(fig)
    styles = _styles([r.name for r in runs])
    befores: dict[tuple[float, ...], list[str]] = {}
    for r in runs:
        befores.setdefault(tuple(r.pre), []).append(r.name)
    for pre, names in befores.items():
        if len(befores) == 1:  # one base model: one black line
            top.plot(range(len(pre)), pre, color="black", lw=1.5, marker=".", label="before training (all runs)")
        else:  # several bases (e.g. one per seed): greys, one marker each
            k = list(befores).index(pre)
            top.plot(range(len(pre)), pre, color=str(0.55 * k / max(len(befores) - 1, 1)),
                     marker=MARKERS[k % len(MARKERS)], ms=4, lw=1.2, label=f"before: {_runs_label(names)}")
    for r in runs:
        _, colour, marker = styles[r.name]
        bottom.plot(range(len(r.delta)), r.delta, color=colour, marker=marker, ms=4, lw=1, alpha=0.85,
                    label=_label(r.name))
    bottom.axhline(0.0, color="black", lw=0.8)
    zone_handle = _shade_depth_zones([top, bottom], max(len(r.pre) for r in runs))
    top.set_ylabel(metric)
    top.set_title(f"per-layer {metric}: before training (top) and each run's change after - before (bottom)",
                  fontsize=10, pad=14)
    bottom.set_ylabel(f"Δ {metric} (after - before)")
    bottom.set_xlabel("decoder layer")
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = top.get_legend_handles_labels()
    top.legend(handles + [zone_handle], labels + [zone_handle.get_label()], fontsize=7, loc="center left",
               bbox_to_anchor=(1.01, 0.5))  # beside the axes: never over the profile or the y label
    bottom.legend(fontsize=7, ncol=1 if len(runs) <= 12 else 2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return _png(fig)


def trajectories(runs: list[RunRecord]) -> bytes:
    """One panel per group (small multiples, shared axes); its seeds as lines with distinct markers.

    The lines are the validations during training (LoRA separate); the merged-LoRA accuracy of the
    final step, the one a deployment would see, is the same marker unfilled."""
    styles = _styles([r.name for r in runs])
    groups = list(dict.fromkeys(styles[r.name][0] for r in runs)) or ["(no runs)"]
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.2 * cols, 8.0), 3.0 * rows + 0.6), sharex=True,
                             sharey=True, squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    panel = {g: axes.flat[i] for i, g in enumerate(groups)}
    for r in runs:
        group, colour, marker = styles[r.name]
        steps, acc = zip(*r.trajectory)
        panel[group].plot(steps, [100 * a for a in acc], color=colour, marker=marker, ms=5, lw=1.2, alpha=0.85,
                          label=_label(r.name))
        if r.merged:
            steps, acc = zip(*r.merged)
            panel[group].scatter(steps, [100 * a for a in acc], s=60, marker=marker, facecolors="none",
                                 edgecolors=colour, linewidths=1.2, zorder=3, label=f"{_label(r.name)}, merged")
    for group, ax in panel.items():
        ax.set_title(group, fontsize=9)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")  # the spot covering fewest points
    _accuracy_axis(axes.flat[0])  # shared by every panel
    for ax in axes[-1]:
        ax.set_xlabel("step")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy (%)")
    fig.suptitle("validation accuracy by group (greedy, no noise, training quantization)\n"
                 "lines: LoRA separate; unfilled: LoRA merged", fontsize=10)
    return _png(fig)


def delta_vs_accuracy(xs: list[float], ys: list[float], names: list[str], metric: str, accuracy: str) -> bytes:
    """Final accuracy (of kind `accuracy`: merged | separate) against the run's mean per-layer change;
    colour = group, marker = seed, legend by run."""
    fig, ax = plt.subplots(figsize=(8.5, 4.8))
    styles = _styles(names)
    for x, y, name in zip(xs, ys, names):
        _, colour, marker = styles[name]
        ax.scatter([x], [100 * y], color=colour, marker=marker, s=40, label=_label(name), zorder=3)
    if len(xs) >= SMALL_N and np.ptp(xs) > 0:  # a line through a handful of points suggests a trend it cannot show
        slope, icept = np.polyfit(xs, [100 * y for y in ys], 1)
        grid = np.linspace(min(xs), max(xs), 20)
        ax.plot(grid, slope * grid + icept, color="red", lw=1, label=f"least-squares fit: {slope:.3g} x + {icept:.3g}")
    if names:
        ax.legend(fontsize=7, ncol=1 if len(names) <= 14 else 2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_xlabel(f"mean change of {metric} over layers (after - before)")
    ax.set_ylabel(f"final accuracy, LoRA {accuracy} (%)")
    _accuracy_axis(ax)
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
    ax.figure.canvas.draw()  # the offset text ("1e-4") exists only once drawn: move it into the axis label
    offset = ax.xaxis.get_major_formatter().get_offset()
    if offset:
        ax.xaxis.offsetText.set_visible(False)
        ax.set_xlabel(f"{ax.get_xlabel()}, × {offset}")
    ax.grid(alpha=0.3)
    return _png(fig)
