"""What a reader sees: the baseline line, distinct column headers, figures that tell runs apart."""

import re

from reports import figures
from reports.build import build_report
from reports.figures import _styles, delta_vs_accuracy, layer_profiles, trajectories
from reports.render import markdown, sections
from reports.runs import load_runs

from .conftest import write_run


def _two_groups(root):
    for s in range(2):
        write_run(root, f"alpha-s{s}", seed=s, acc=[0.4, 0.5 + 0.01 * s])
        write_run(root, f"beta-s{s}", seed=s, acc=[0.4, 0.6 + 0.01 * s], noise={"sigma_start": 0.01})
    return load_runs(root, "relative_error")


def test_without_a_baseline_the_report_says_why_and_how_to_pick_one(tmp_path):
    report = build_report(_two_groups(tmp_path), metric="relative_error", baseline=None, target=None)
    assert report["baseline"] is None
    text = markdown(report, {})
    assert "None" not in text
    assert "Baseline: none" in text and "--baseline GROUP (groups here: alpha, beta)" in text
    titles = [title for title, _, _ in sections(report)]
    assert "Config differences vs baseline (no baseline: pass --baseline GROUP to see them)" in titles
    named = build_report(_two_groups(tmp_path / "b"), metric="relative_error", baseline="alpha", target=None)
    assert markdown(named, {}).splitlines()[2].startswith("Baseline: alpha. Target accuracy")


def test_correlation_columns_have_distinct_headers(study):
    report = build_report(load_runs(study, "relative_error"), metric="relative_error", baseline=None, target=None)
    header = next(h for title, h, _ in sections(report) if title == "Correlations")
    assert len(header) == len(set(header)) and {"pearson p", "spearman p"} <= set(header)


def test_figures_colour_by_group_and_mark_by_seed(study):
    runs = [r for r in load_runs(study, "relative_error") if r.valid]
    styles = _styles([r.name for r in runs])
    assert styles["E13i-baseline-s0"][1] == styles["E13i-baseline-s2"][1] != styles["E13j-variable-s0"][1]
    assert len({styles[f"E13i-baseline-s{s}"][2] for s in range(3)}) == 3
    for png in (layer_profiles(runs, "relative_error"), trajectories(runs),
                delta_vs_accuracy([sum(r.delta) for r in runs], [r.final_accuracy for r in runs],
                                  [r.name for r in runs], "relative_error", "merged")):
        assert png.startswith(b"\x89PNG")


def test_results_headers_name_the_accuracy_each_column_holds(tmp_path):
    """The final column is the compared kind; best is over the (LoRA-separate) validations during training."""
    report = build_report(_two_groups(tmp_path), metric="relative_error", baseline=None, target=None)
    header = next(h for title, h, _ in sections(report) if title == "Results")
    assert f"final ({report['accuracy']})" in header and "best (separate)" in header and "final" not in header


def test_figures_say_which_accuracy_they_plot(study, monkeypatch):
    """Lines are LoRA-separate validations, unfilled markers the merged final; the scatter names its kind."""
    monkeypatch.setattr(figures, "_png", lambda fig: fig)  # the figure itself, to read its labels
    runs = [r for r in load_runs(study, "relative_error") if r.valid]
    fig = trajectories(runs)
    assert "lines: LoRA separate; unfilled: LoRA merged" in fig._suptitle.get_text()
    merged_points = [c for ax in fig.axes for c in ax.collections]
    assert len(merged_points) == sum(1 for r in runs if r.merged) > 0
    scatter = delta_vs_accuracy([0.0] * len(runs), [r.final_accuracy for r in runs], [r.name for r in runs],
                                "relative_error", "separate")
    assert scatter.axes[0].get_ylabel() == "final accuracy, LoRA separate (%)"


def test_report_md_prints_names_as_text_never_as_markup(tmp_path):
    """A run name cannot open a link or an image in the prose, nor close the fence around a table."""
    link, fence = "[x](javascript:alert(1))", "````<img src=x onerror=alert(1)>"
    for s in range(2):
        write_run(tmp_path, f"{link}-s{s}", seed=s, acc=[0.4, 0.5 + 0.01 * s])
        write_run(tmp_path, f"{fence}-s{s}", seed=s, acc=[0.4, 0.6 + 0.01 * s], noise={"sigma_start": 0.01})
    text = markdown(build_report(load_runs(tmp_path, "relative_error"), metric="relative_error", baseline=None,
                                 target=None), {})
    prose = [line for line in text.splitlines() if line.startswith("Baseline:")][0]
    assert r"\[x\](javascript:alert(1))" in prose and r"\`\`\`\`\<img" in prose
    inside, fenced = None, []  # CommonMark: a fence closes only at a backtick line at least as long
    for line in text.splitlines():
        if inside is None and line.startswith("```"):
            inside = len(line)
        elif inside is not None and set(line) == {"`"} and len(line) >= inside:
            inside = None
        elif inside is not None:
            fenced.append(line)
        else:
            assert "<img" not in line or r"\<img" in line, line
    assert inside is None and any(f"{fence}-s0" in line for line in fenced)  # shown as it is, inside a fence


def test_figure_text_stays_off_the_data_and_inside_the_figure(study, monkeypatch):
    """Legends beside the axes with short labels, a title as wide as the figure at most, no offset text
    under the axis label, and no fit line through a handful of points."""
    monkeypatch.setattr(figures, "_png", lambda fig: fig)
    runs = [r for r in load_runs(study, "relative_error") if r.valid]
    for r in runs:  # one base scan per seed, as when every seed rescans the model
        r.pre = [v + 0.001 * int(r.name[-1]) for v in r.pre]
    fig = layer_profiles(runs, "relative_error")
    fig.canvas.draw()
    top = fig.axes[0]
    legend = top.get_legend()
    assert legend.get_window_extent().x0 >= top.get_window_extent().x1  # beside the axes, not over the y label
    labels = [t.get_text() for t in legend.get_texts()]
    assert "before: the 4 runs named *-s0" in labels and max(map(len, labels)) < 40

    fig = trajectories(runs[:2])
    fig.canvas.draw()
    assert fig._suptitle.get_window_extent().width <= fig.bbox.width

    def fit_lines(n):
        xs = [1e-4 * (1 + k) for k in range(n)]
        ax = delta_vs_accuracy(xs, [0.1 * k % 1 for k in range(n)], [f"g{k}-s0" for k in range(n)],
                               "relative_error", "merged").axes[0]
        assert not ax.xaxis.offsetText.get_visible() and re.search(r", × 1e−[34]$", ax.get_xlabel())
        return [line for line in ax.get_lines() if "least-squares" in line.get_label()]

    assert fit_lines(2) == [] and fit_lines(9) == [] and len(fit_lines(10)) == 1


def test_markdown_tables_keep_short_values_beside_their_keys(tmp_path):
    """A long config value is left-aligned in its column: right-aligned, it pushed every short one far right."""
    report = build_report(_two_groups(tmp_path), metric="relative_error", baseline="alpha", target=None)
    report["config_diff"]["beta-s0"]["noise.zone_overrides"] = [[], [{"name": "high_error", "layers": list(range(20))}]]
    text = markdown(report, {})
    diff = text.split("## Config differences", 1)[1].split("```")[1].splitlines()
    row = next(line for line in diff if "noise.sigma_start" in line)
    assert len(row) < 60 and row == row.rstrip()


def test_a_p_value_never_reads_zero(tmp_path):
    report = build_report(_two_groups(tmp_path), metric="relative_error", baseline="alpha", target=None)
    for c in report["correlations"]:
        c["spearman_p"], c["spearman_rho"] = 0.0, -1.0
    correlations = next(rows for title, _, rows in sections(report) if title == "Correlations")
    assert correlations and all(row[8] == "< 1e-16" for row in correlations)
