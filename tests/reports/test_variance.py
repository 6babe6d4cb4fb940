"""A confirmatory family's variance components in the report, observed and as its power plan assumed."""

import json
from dataclasses import asdict

import pytest

from calibrate.suite import SUITE_HYPOTHESES
from reports.plan import Components, estimate, plan
from reports.runs import load_runs
from reports.variance import planned
from srdd.cli import main

from .conftest import write_pilot

ARMS = ("control", "E13i-baseline", "E13m-rmsnorm", "E13j-variable")
FAMILY = [h for h in SUITE_HYPOTHESES if h.key in ("C1", "C2", "C3")]


@pytest.fixture
def study(tmp_path):
    """A pilot the study was planned from, and the study, four seeds each."""
    pilot = write_pilot(tmp_path / "pilot" / "runs", ARMS, outcomes=True, seed=1)
    runs = write_pilot(tmp_path / "study" / "runs", ARMS, outcomes=True, seed=2)
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan(pilot, effect_pp=20, hypotheses=["C1", "C2", "C3"], sizes=[64])))
    return runs, path


def _correlate(runs, out, *args) -> int:
    return main(["correlate", str(runs), "-o", str(out), "--hypotheses", "C1,C2,C3", *map(str, args)])


def test_the_report_sets_the_studys_components_beside_the_plans(study, capsys):
    runs, plan_path = study
    assert _correlate(runs, runs.parent / "report", "--plan", plan_path) == 0
    report = json.loads((runs.parent / "report" / "report.json").read_text())
    section = report["variance_components"]
    expected, _, _ = estimate(load_runs(runs, "relative_error"), FAMILY)
    assert section["observed"] == json.loads(json.dumps(asdict(expected)))  # as the planner reads a pilot
    assumed = json.loads(plan_path.read_text())
    assert section["planned"]["run_variance"] == {"measured": assumed["components"]["residual"]}  # same 64 problems
    assert section["planned"]["designs"] == assumed["designs"] and report["options"]["plan"] == str(plan_path)
    md = (runs.parent / "report" / "report.md").read_text()
    assert "Variance components of the final accuracy (the family's arms), observed and as planned" in md
    arm = "E13m-rmsnorm"
    row = next(line for line in md.splitlines() if f"run residual, {arm}" in line)
    assert f"{100 * expected.residual[arm] ** 0.5:.1f}" in row
    assert f"{100 * assumed['components']['residual'][arm] ** 0.5:.1f}" in row


def test_the_plans_components_are_rescaled_to_the_studys_test_set():
    c = Components(arms=["a", "b"], seeds=[0, 1], test_size=64, seed_variance=0.001, residual={"a": 0.01, "b": 0.02},
                   problem={"a": 0.004, "b": 0.008}, problem_measured=False, note="bounded")
    p = {"pilot": "p/runs", "effect_pp": 5, "hypotheses": ["C1"], "components": asdict(c), "designs": []}
    out = planned(p, 512)
    assert out["run_variance"]["problem part at its bound"] == pytest.approx({"a": 0.006 + 0.0005, "b": 0.012 + 0.001})
    assert out["run_variance"]["no problem part"] == pytest.approx({"a": 0.01, "b": 0.02})
    assert out["seed_variance"] == 0.001 and out["pilot_test_size"] == 64


def test_no_family_no_section_and_a_bad_plan_is_named(study, tmp_path, capsys):
    runs, plan_path = study
    assert main(["correlate", str(runs), "-o", str(tmp_path / "plain")]) == 0
    assert "variance_components" not in json.loads((tmp_path / "plain" / "report.json").read_text())
    capsys.readouterr()
    design = tmp_path / "design.json"
    design.write_text(json.dumps({"schema": "srdd.design-plan/v1"}))
    for bad, says in ((tmp_path / "none.json", "no such file"), (design, "expected a srdd.plan/v1 plan")):
        assert _correlate(runs, tmp_path / "bad", "--plan", bad) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("error:") == 1
        assert not (tmp_path / "bad").exists()


def test_a_declared_family_without_a_plan_shows_the_observed_components_alone(study):
    runs, _ = study
    assert _correlate(runs, runs.parent / "report") == 0
    report = json.loads((runs.parent / "report" / "report.json").read_text())
    assert "planned" not in report["variance_components"] and "plan" not in report["options"]
    md = (runs.parent / "report" / "report.md").read_text()
    title = "Variance components of the final accuracy (the family's arms), observed"
    assert title in md and f"{title} and as planned" not in md and "planned sd" not in md
