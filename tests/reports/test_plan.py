"""`srdd study plan`: its predicted power against simulated studies of the same design, its components, its CLI."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from calibrate.suite import HYPOTHESES, SUITE_HYPOTHESES
from reports.compare import Method
from reports.plan import Components, Timing, design_power, estimate, fewest_seeds, plan, timing
from reports.runs import load_runs
from reports.verdicts import SUPPORTED, VerdictSettings, decide
from srdd.cli import main

from .conftest import write_pilot

PILOT = Path(__file__).resolve().parents[2] / "studies" / "smollm2" / "runs"
STUDIES = 4000  # Monte-Carlo sd of a power near 0.8: 0.0063; with the planner's 0.004, the check's ±0.03 is > 3 sd


def srdd(*args):
    return subprocess.run(["srdd", *map(str, args)], capture_output=True, text=True, timeout=600)


def _simulated_power(plan: dict, design: dict, hypothesis: str) -> float:
    """Studies of the design, simulated from the plan's components, through the report's own decision (Holm)."""
    c = plan["components"]
    keys = plan["hypotheses"]
    arms = c["arms"]
    with_part = design["scenario"] != "no problem part"
    m, n = design["test_size"], design["seeds"]
    var = np.array([c["residual"][a] - (c["problem"][a] if with_part else 0) * (1 - c["test_size"] / m)
                    for a in arms])
    rng = np.random.default_rng(m + n)
    y = (0.2 + rng.normal(0, np.sqrt(c["seed_variance"]), (STUDIES, 1, n))
         + rng.standard_normal((STUDIES, len(arms), n)) * np.sqrt(var)[:, None])
    h = next(h for h in SUITE_HYPOTHESES if h.key == hypothesis)
    pairs = []
    for key in keys:
        hk = next(x for x in SUITE_HYPOTHESES if x.key == key)
        pairs.append((arms.index(hk.treatment), arms.index(hk.control)))
    y[:, arms.index(h.treatment)] += plan["effect_pp"] / 100
    codes = decide(list(np.moveaxis(y, 1, 0)), [list(range(n))] * len(arms), pairs,
                   VerdictSettings(analysis=plan["analysis"])).codes
    return float((codes[:, keys.index(hypothesis)] == SUPPORTED).mean())


@pytest.mark.slow  # 10^4-study simulations of the committed 27-run pilot: ~25 s
@pytest.mark.parametrize("effect, sizes", [(10, "64,512"), (5, "256")])
def test_plan_of_the_committed_pilot_is_confirmed_by_simulation(effect, sizes):
    """The designs studies/smollm2/README.md quotes: their predicted power, against simulated studies."""
    r = srdd("study", "plan", PILOT, "--effect", effect, "--sizes", sizes, "--max-seeds", 200, "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["hypotheses"] == [h.key for h in HYPOTHESES] and plan["holm_strictest_level"] == pytest.approx(0.05 / 6)
    assert not plan["components"]["problem_measured"]
    assert "bounded, not measured" in plan["components"]["note"]
    designs = plan["designs"]
    assert {d["scenario"] for d in designs} == {"problem part at its bound", "no problem part"}
    for d in designs:
        assert d["seeds"] is not None and d["power"] >= 0.8 and d["hours"] > 0
        weakest = min(d["powers"], key=d["powers"].get)
        assert abs(_simulated_power(plan, d, weakest) - d["powers"][weakest]) <= 0.03
    bound = {d["test_size"]: d["seeds"] for d in designs if d["scenario"] == "problem part at its bound"}
    none = {d["test_size"]: d["seeds"] for d in designs if d["scenario"] == "no problem part"}
    if effect == 10:  # more problems help only through the problem part
        assert bound[512] < bound[64] and none[512] == none[64]
    t = plan["timing"]
    assert t["steps"] == 24 and t["endpoint_evaluations"] == 2 and t["other_problems"] == 2 * 64
    assert 10 < t["step_s"] < 20


def test_problem_part_is_measured_from_per_problem_outcomes(tmp_path):
    root = write_pilot(tmp_path / "runs", outcomes=True)
    hyps = [h for h in HYPOTHESES if h.key in ("H1", "H3")]
    components, pairs, runs = estimate(load_runs(root, "relative_error"), hyps)
    assert components.problem_measured and "measured" in components.note and len(runs) == 12
    assert components.arms == ["E13i-baseline", "E13i-targeted", "E13j-variable"] and pairs == [(0, 1), (2, 0)]
    lines = [(root / f"E13i-targeted-s{s}" / "eval_outcomes.jsonl").read_text().splitlines() for s in range(4)]
    x = np.stack([(np.array(list(json.loads(run[-1])["strict"])) == "1").astype(float) for run in lines])
    inter = x - x.mean(1, keepdims=True) - x.mean(0) + x.mean()
    expected = (inter**2).sum() / (3 * 63) / 64
    assert components.problem["E13i-targeted"] == pytest.approx(min(expected, components.residual["E13i-targeted"]))
    clock = timing(runs)
    assert clock.step_s == pytest.approx(12.1) and clock.steps == 20
    assert clock.endpoint_evaluations == 2 and clock.other_problems == 2 * 64  # steps 0 and 10; 20 and 20 merged
    assert clock.problem_s == pytest.approx(0.25, rel=0.01)


def test_older_pilots_are_bounded_with_a_note(tmp_path):
    root = write_pilot(tmp_path / "runs")
    hyps = [h for h in HYPOTHESES if h.key in ("H1", "H3")]
    components, _, _ = estimate(load_runs(root, "relative_error"), hyps)
    assert not components.problem_measured and "at most p(1-p)/64" in components.note
    for arm in components.arms:
        assert components.problem[arm] <= components.residual[arm] + 1e-15


def test_cli_table_and_bad_input(tmp_path, capsys):
    root = write_pilot(tmp_path / "runs")
    r = srdd("study", "plan", root, "--effect", "20", "--hypotheses", "H1,H3", "--sizes", "64")
    assert r.returncode == 0, r.stderr
    assert "seeds per arm" in r.stdout and "bounded, not measured" in r.stdout and "s per step" in r.stdout
    bad = srdd("study", "plan", root, "--effect", "0")
    assert bad.returncode == 2 and bad.stderr.count("error:") == 1 and "--effect 0" in bad.stderr and not bad.stdout
    for args, says in ((["--effect", "5", "--hypotheses", "H9"], "unknown H9"),
                       (["--effect", "5", "--hypotheses", "H2"], "H2 needs arms"),
                       (["--effect", "5", "--sizes", "64,x"], "--sizes")):
        assert main(["study", "plan", str(root), *args]) == 2  # the same entry point, in-process
        out, err = capsys.readouterr()
        assert says in err and err.count("error:") == 1 and not out, err


def test_the_arm_vs_control_family_is_sized_with_holm_over_it_alone(tmp_path):
    """C1, C2 (against the control arm) and C3: the control's variance is estimated with the others', alpha is
    split three ways, and the power the plan promises is what simulated studies of it get from the report."""
    root = write_pilot(tmp_path / "runs", ("control", "E13i-baseline", "E13m-rmsnorm", "E13j-variable"))
    r = srdd("study", "plan", root, "--effect", 20, "--hypotheses", "C3,C1,C2", "--sizes", 64, "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["hypotheses"] == ["C1", "C2", "C3"] and plan["family_source"] == "--hypotheses"
    assert plan["holm_strictest_level"] == pytest.approx(0.05 / 3)
    assert sorted(plan["components"]["arms"]) == ["E13i-baseline", "E13j-variable", "E13m-rmsnorm", "control"]
    assert plan["components"]["residual"]["control"] > 0
    for d in plan["designs"]:
        weakest = min(d["powers"], key=d["powers"].get)
        assert d["power"] >= 0.8 and abs(_simulated_power(plan, d, weakest) - d["powers"][weakest]) <= 0.03


def test_without_hypotheses_the_plan_sizes_the_studys_declared_family(tmp_path, capsys):
    root = write_pilot(tmp_path / "runs", ("control", "E13i-baseline"))
    (root / "_study").mkdir()
    (root / "_study" / "study.json").write_text(json.dumps({"hypotheses": ["C1"]}))
    assert main(["study", "plan", str(root), "--effect", "20", "--sizes", "64", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["hypotheses"] == ["C1"] and "_study/study.json" in plan["family_source"]
    assert plan["holm_strictest_level"] == pytest.approx(0.05)
    (root / "_study" / "study.json").write_text(json.dumps({"hypotheses": ["C1", "C9"]}))
    assert main(["study", "plan", str(root), "--effect", "20"]) == 2
    err = capsys.readouterr().err
    assert "unknown C9" in err and "_study/study.json" in err and err.count("error:") == 1


def test_the_pooled_power_of_two_arms_is_the_paired_t_test_of_statsmodels():
    """Two arms in the arm + seed model with one pooled variance are a paired t-test (df n - 1): the plan's
    simulated power and its fewest seeds agree with statsmodels' TTestPower at the family's Holm level."""
    from statsmodels.stats.power import TTestPower

    variance, effect, alpha = 0.05**2, 0.05, 0.05 / 3
    c = Components(arms=["a", "b"], seeds=[0, 1, 2], test_size=64, seed_variance=0.0,
                   residual={"a": variance, "b": variance}, problem={"a": 0.0, "b": 0.0}, problem_measured=True,
                   note="")
    d = effect / np.sqrt(2 * variance)  # statsmodels' standardized effect_size: per-seed difference's sd
    for n in (4, 8, 16):
        got = design_power(c, [(0, 1)], Method.POOLED, n, 64, effect, alpha, True)[0]
        assert got == pytest.approx(TTestPower().power(effect_size=d, nobs=n, alpha=alpha), abs=0.015), n
    seeds, _ = fewest_seeds(c, [(0, 1)], Method.POOLED, 64, effect, alpha, True, 50)
    assert abs(seeds - np.ceil(TTestPower().solve_power(effect_size=d, alpha=alpha, power=0.8))) <= 1


def test_timing_runs_price_the_plan_and_must_be_the_pilots_design(tmp_path, capsys):
    """--timing: the pilot's variances, another runs directory's wall times (the same design under faster code)."""
    root = write_pilot(tmp_path / "runs", outcomes=True)
    faster = write_pilot(tmp_path / "faster", ("E13i-baseline",), step_s=6.0, seed=5)
    for s in (0, 1, 3):  # one complete run prices a plan; running ones are left out
        info = json.loads((faster / f"E13i-baseline-s{s}" / "run.json").read_text())
        (faster / f"E13i-baseline-s{s}" / "run.json").write_text(json.dumps({**info, "status": "running"}))
    options = dict(effect_pp=20, hypotheses=["H1", "H3"], sizes=[64])
    own, priced = plan(root, **options), plan(root, **options, timing_dir=faster)
    assert priced["components"] == own["components"] and priced["designs"][0]["seeds"] == own["designs"][0]["seeds"]
    assert own["timing"]["step_s"] == pytest.approx(12.1) and priced["timing"]["step_s"] == pytest.approx(6.1)
    assert priced["timing_runs"] == str(faster) and own["timing_runs"] == str(root)
    clock = Timing(**priced["timing"])
    assert priced["designs"][0]["hours"] == pytest.approx(own["designs"][0]["seeds"] * 3 * clock.run_seconds(64) / 3600)
    assert priced["designs"][0]["hours"] < own["designs"][0]["hours"]
    info = json.loads((faster / "E13i-baseline-s2" / "run.json").read_text())
    info["config"]["grpo"]["steps"] = 40
    (faster / "E13i-baseline-s2" / "run.json").write_text(json.dumps(info))
    assert main(["study", "plan", str(root), "--timing", str(faster), "--effect", "20", "--hypotheses", "H1,H3",
                 "--sizes", "64"]) == 2
    err = capsys.readouterr().err
    assert "run E13i-baseline-s2 is another design than the pilot's: grpo.steps 40 (pilot 20)" in err


def test_each_arm_is_priced_by_its_own_runs_and_an_arm_without_runs_by_all(tmp_path):
    """One seed of every arm costs the sum of the arms' runs: a slow arm (RMSNorm noise skips the shared-prompt
    update) is not hidden under a median of the fast ones."""
    root = write_pilot(tmp_path / "runs")
    mixed = write_pilot(tmp_path / "mixed", ("E13i-baseline",), step_s=6.0, seed=5)
    write_pilot(mixed, ("E13i-targeted", "E13j-variable"), step_s=18.0, seed=6)
    priced = plan(root, effect_pp=20, hypotheses=["H1", "H3"], sizes=[64], timing_dir=mixed)["timing"]
    assert priced["step_s"] == pytest.approx((6.1 + 18.1 + 18.1) / 3)
    runs = load_runs(mixed, "relative_error")
    assert timing(runs).step_s == pytest.approx(18.0)  # no arms: the median of every step (2 in 3 are 18.x s)
    assert timing(runs, ["E13i-baseline", "E13k-constant"]).step_s == pytest.approx((6.1 + 18.0) / 2)
