"""`srdd study plan --design`: pilots of two ways to run a study, priced by their own runs, the cheapest named."""

import json
import subprocess

import pytest

from reports.designs import compare_designs, needed
from reports.plan import Timing, plan
from srdd.cli import main

from .conftest import write_pilot

ARMS = ("control", "E13i-baseline", "E13m-rmsnorm", "E13j-variable")
OPTIONS = dict(effect_pp=20, hypotheses=["C1", "C2", "C3"], analysis="blocked", sizes=[64, 256], max_seeds=50)


@pytest.fixture
def pilots(tmp_path):
    """`steady`: runs that agree closely and cost twice as much per step; `noisy`: cheap runs that scatter."""
    return {"steady": write_pilot(tmp_path / "steady", ARMS, flip=0.04, step_s=24.0, seed=1),
            "noisy": write_pilot(tmp_path / "noisy", ARMS, flip=0.3, step_s=12.0, seed=2)}


def _argv(pilots: dict) -> list[str]:
    return [w for name, path in pilots.items() for w in ("--design", f"{name}={path}")]


def test_each_design_is_planned_alone_priced_by_its_runs_and_the_cheapest_named(pilots):
    r = subprocess.run(["srdd", "study", "plan", *_argv(pilots), "--effect", "20", "--hypotheses", "C1,C2,C3",
                        "--sizes", "64,256", "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["hypotheses"] == ["C1", "C2", "C3"] and [d["name"] for d in result["designs"]] == list(pilots)
    hours = {}
    for d in result["designs"]:
        alone = plan(pilots[d["name"]], **OPTIONS)
        assert d["plan"]["designs"] == alone["designs"] and d["plan"]["components"] == alone["components"]
        by_size = {}
        for row in alone["designs"]:  # the seeds every scenario of the problem part agrees on, per test-set size
            by_size.setdefault(row["test_size"], []).append(row)
        agreed = [max(rows, key=lambda x: x["seeds"]) for rows in by_size.values()]
        best = min(agreed, key=lambda x: x["hours"])
        assert d["cheapest"] == best
        clock = Timing(**alone["timing"])  # the pilot's own wall times: 20 steps, 4 evaluations, 100 s besides
        assert clock.run_seconds(64) == pytest.approx(20 * clock.step_s + 4 * 64 * 0.25 + 100, rel=0.01)
        assert clock.run_seconds(512) - clock.run_seconds(64) == pytest.approx(2 * 448 * clock.problem_s)
        assert best["hours"] == pytest.approx(best["seeds"] * len(ARMS) * clock.run_seconds(best["test_size"]) / 3600)
        hours[d["name"]] = best["hours"]
    assert result["cheapest"] == min(hours, key=hours.get)
    assert result["ranking"] == sorted(hours, key=hours.get)


def test_the_table_says_which_design_is_cheapest(pilots, capsys):
    result = compare_designs(list(pilots.items()), **{**OPTIONS, "sizes": [64]})
    win, other = (next(d["cheapest"] for d in result["designs"] if d["name"] == name) for name in result["ranking"])
    assert main(["study", "plan", *_argv(pilots), "--effect", "20", "--hypotheses", "C1,C2,C3", "--sizes", "64"]) == 0
    out = capsys.readouterr().out
    assert (f"cheapest: {result['ranking'][0]}, {win['hours']:.1f} h ({win['seeds']} seeds per arm, 64 test problems); "
            f"{result['ranking'][1]} {other['hours'] / win['hours']:.2f}x as long") in out
    assert "seeds per arm" in out and "min per run" in out and all(name in out for name in pilots)


def test_a_size_some_scenario_cannot_reach_is_not_offered():
    rows = [{"scenario": "bound", "test_size": 64, "seeds": 5, "hours": 1.0},
            {"scenario": "none", "test_size": 64, "seeds": 7, "hours": 1.4},
            {"scenario": "bound", "test_size": 256, "seeds": 4, "hours": 2.0},
            {"scenario": "none", "test_size": 256, "seeds": None, "hours": None}]
    assert needed({"designs": rows}) == [rows[1]]


@pytest.mark.parametrize("args, says", [
    (["--design", "a={steady}"], "two or more designs"),
    (["--design", "a={steady}", "--design", "a={noisy}"], "distinct names"),
    (["--design", "a={steady}", "--design", "b"], "expected NAME=RUNS"),
    (["{steady}", "--design", "a={steady}", "--design", "b={noisy}"], "not both"),
    ([], "give one pilot's RUNS"),
])
def test_bad_designs_are_refused(pilots, capsys, args, says):
    argv = [a.format(**{k: str(v) for k, v in pilots.items()}) for a in args]
    assert main(["study", "plan", *argv, "--effect", "20", "--hypotheses", "C1"]) == 2
    out, err = capsys.readouterr()
    assert says in err and err.count("error:") == 1 and not out, err


def test_designs_whose_pilots_declare_different_families_are_refused(pilots, capsys):
    (pilots["steady"] / "_study").mkdir()
    (pilots["steady"] / "_study" / "study.json").write_text(json.dumps({"hypotheses": ["C1", "C2", "C3"]}))
    assert main(["study", "plan", *_argv(pilots), "--effect", "20", "--sizes", "64"]) == 2
    err = capsys.readouterr().err
    assert "plan different families" in err and "give --hypotheses" in err


def test_timing_prices_one_design_by_other_runs_and_names_only_known_designs(pilots, capsys):
    """`--timing steady=RUNS`: steady's variances, the noisy pilot's (cheaper) step times."""
    alone = compare_designs(list(pilots.items()), **{**OPTIONS, "sizes": [64]})
    priced = compare_designs(list(pilots.items()), **{**OPTIONS, "sizes": [64]}, timings={"steady": pilots["noisy"]})
    before, after = ({d["name"]: d for d in r["designs"]} for r in (alone, priced))
    assert after["steady"]["plan"]["timing"] == before["noisy"]["plan"]["timing"]
    assert after["steady"]["cheapest"]["seeds"] == before["steady"]["cheapest"]["seeds"]
    assert after["steady"]["cheapest"]["hours"] < before["steady"]["cheapest"]["hours"] and after["noisy"] == before["noisy"]
    assert main(["study", "plan", *_argv(pilots), "--timing", "stedy=x", "--effect", "20", "--hypotheses", "C1"]) == 2
    assert "no --design is named 'stedy'" in capsys.readouterr().err
    assert main(["study", "plan", *_argv(pilots), "--timing", f"steady={pilots['noisy']}", "--effect", "20",
                 "--hypotheses", "C1,C2,C3", "--sizes", "64"]) == 0
    assert f"{pilots['steady']} (timed by {pilots['noisy']})" in capsys.readouterr().out
