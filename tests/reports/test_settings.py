"""A study's analysis settings: where the margin and the analysis come from; a declared pooled variance's report."""

import json

import pytest

from reports.build import build_report
from reports.render import markdown
from reports.runs import load_runs
from reports.settings import resolve
from reports.verdicts import VerdictSettings
from srdd.errors import SrddError


def _study(runs, **declared):
    (runs / "_study").mkdir(parents=True, exist_ok=True)
    (runs / "_study" / "study.json").write_text(json.dumps({"schema": "srdd.study/v1", "suite": str(runs.parent / "s"),
                                                            **declared}))


def test_margin_defaults_to_the_suite_gap_else_5_pp_never_below_one_problem(tmp_path):
    runs = tmp_path / "runs"
    _study(runs)
    r = resolve(runs, analysis=None, margin_pp=None, test_size=64)
    assert r.settings.margin == pytest.approx(0.05) and "no target - baseline gap" in r.margin_source
    assert r.settings.analysis == "auto" and r.analysis_source == "default"
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "suite.json").write_text(json.dumps({"thresholds": {"baseline_acc": 0.30, "target_acc": 0.38}}))
    r = resolve(runs, analysis=None, margin_pp=None, test_size=64)
    assert r.settings.margin == pytest.approx(0.08) and "target - baseline" in r.margin_source
    r = resolve(runs, analysis=None, margin_pp=None, test_size=8)  # one problem is 12.5 pp
    assert r.settings.margin == pytest.approx(0.125) and "one test problem" in r.margin_source
    with pytest.raises(SrddError, match="below one test problem"):
        resolve(runs, analysis=None, margin_pp=1.0, test_size=64)


def test_declared_settings_win_and_the_command_line_wins_over_them(tmp_path):
    runs = tmp_path / "runs"
    _study(runs, analysis="pooled", margin_pp=3)
    r = resolve(runs, analysis=None, margin_pp=None, test_size=64)
    assert (r.settings.analysis, r.settings.margin) == ("pooled", pytest.approx(0.03))
    assert "study's settings" in r.analysis_source and "study's settings" in r.margin_source
    r = resolve(runs, analysis="welch", margin_pp=2.5, test_size=64)
    assert (r.settings.analysis, r.settings.margin, r.margin_source) == ("welch", pytest.approx(0.025), "--margin")
    _study(runs, analysis="anova")
    with pytest.raises(SrddError, match="'anova'"):
        resolve(runs, analysis=None, margin_pp=None, test_size=64)


def test_a_declared_pooled_variance_comes_with_its_check_and_the_per_arm_analysis(study):
    report = build_report(load_runs(study, "relative_error"), metric="relative_error", baseline=None, target=None,
                          settings=VerdictSettings(analysis="pooled"), sources={"analysis": "--analysis"})
    a = report["statistics"]["analysis"]
    assert a["method"] == "pooled" and "declared" in a["why"] and "exact noncentral t" in a["detectable_effect"]
    assert 0 <= a["heterogeneity"]["levene_p"] <= 1 and len(a["heterogeneity"]["residual_sd"]) == 3
    assert [v["hypothesis"] for v in a["sensitivity"]] == ["H1", "H3"]
    assert all(v["test"] == "blocked" for v in a["sensitivity"])
    text = markdown(report, {})
    assert "Heterogeneity of the arms' residual variances" in text and "Sensitivity: the same hypotheses" in text
    assert "one pooled residual variance" in text


def test_the_suite_is_found_where_study_json_says_relative_to_itself(tmp_path, monkeypatch):
    """study.json names its suite relative to RUNS/_study (as `srdd study run` writes it), wherever the
    command runs from: its target - baseline gap and its hypotheses are the study's."""
    runs = tmp_path / "study" / "runs"
    _study(runs, suite="../../../suites/mine")
    suite = tmp_path / "suites" / "mine"
    suite.mkdir(parents=True)
    mine = {"key": "X1", "question": "q", "treatment": "E13j-variable", "control": "control",
            "differs_in": ["noise"]}
    (suite / "suite.json").write_text(json.dumps({"thresholds": {"baseline_acc": 0.30, "target_acc": 0.37},
                                                  "hypotheses": [mine]}))
    monkeypatch.chdir(tmp_path)
    r = resolve(runs, analysis=None, margin_pp=None, test_size=64)
    assert r.settings.margin == pytest.approx(0.07) and [h.key for h in r.hypotheses] == ["X1"]
    assert r.settings.confirmatory is None and r.family_source is None
