import json
import subprocess

import numpy as np
import pytest
from scipy import stats as sps

from reports.build import build_report
from reports.runs import load_runs
from reports.stats import correlation
from reports.verdicts import VerdictSettings
from srdd.cli import main

from .conftest import write_pilot, write_run


def srdd(*args):
    return subprocess.run(["srdd", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_correlations_equal_scipy_and_their_interval_agrees_with_p():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=20), rng.normal(size=20)
    c = correlation(list(x), list(y + x), scope="across_runs", xname="a", yname="b")
    assert c["pearson_r"] == pytest.approx(sps.pearsonr(x, y + x).statistic, abs=1e-12)
    assert c["pearson_p"] == pytest.approx(sps.pearsonr(x, y + x).pvalue, rel=1e-9)
    assert c["spearman_rho"] == pytest.approx(sps.spearmanr(x, y + x).statistic, abs=1e-12)
    assert c["spearman_p"] == pytest.approx(sps.spearmanr(x, y + x).pvalue, rel=1e-9)
    assert c["ci95"][0] < c["pearson_r"] < c["ci95"][1]
    # the Fisher z interval, half-width within 0.5 % of scipy's 1.96-based one
    fisher = sps.pearsonr(x, y + x).confidence_interval(0.95)
    assert c["ci95"] == pytest.approx([fisher.low, fisher.high], abs=5e-3)
    assert correlation([1, 2, 3], [3, 4, 4], scope="across_runs", xname="a", yname="b")["note"].startswith("not enough")
    assert correlation([1, 2, 3, 4], [1, 1, 1, 1], scope="across_layers", run="r", xname="a",
                       yname="b")["pearson_r"] is None


@pytest.mark.parametrize("n", [4, 8, 27])
def test_no_interval_disagrees_with_its_p_value(n):
    """Hundreds of samples, many near the 5 % boundary: the CI excludes 0 exactly when p < 0.05."""
    rng = np.random.default_rng(n)
    x = rng.normal(size=(800, n))
    r_crit = sps.t.ppf(0.975, n - 2) / np.sqrt(n - 2 + sps.t.ppf(0.975, n - 2) ** 2)
    slope = rng.uniform(0.5, 2.0, (800, 1)) * r_crit / np.sqrt(1 - r_crit**2)  # r near r_crit on average
    y = slope * x + rng.normal(size=(800, n))
    rows = [correlation(list(a), list(b), scope="across_runs", xname="a", yname="b") for a, b in zip(x, y)]
    excludes = np.array([lo > 0 or hi < 0 for lo, hi in (c["ci95"] for c in rows)])
    significant = np.array([c["pearson_p"] < 0.05 for c in rows])
    assert 0.2 < significant.mean() < 0.8  # the boundary is well covered
    assert np.array_equal(excludes, significant)


def test_x_set_per_arm_is_flagged():
    arms = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    x = [1.0] * 4 + [2.0] * 4 + [3.0] * 4
    c = correlation(x, list(np.arange(12.0) ** 0.5), scope="across_runs", xname="k", yname="acc", arms=arms)
    assert "set per arm" in c["warning"]
    free = correlation(list(np.arange(12.0)), list(np.arange(12.0) ** 0.5), scope="across_runs", xname="k",
                       yname="acc", arms=arms)
    assert free["warning"] is None


def test_report_content(study):
    runs = load_runs(study, "relative_error")
    report = build_report(runs, metric="relative_error", baseline=None, target="0.62")
    assert report["baseline"] == "E13i-baseline"
    assert [r["name"] for r in report["invalid_runs"]] == ["broken"]
    groups = {r["group"]: r for r in report["results"]}
    assert groups["E13j-variable"]["n"] == 3
    assert groups["E13j-variable"]["final_mean"] == pytest.approx(np.mean([0.60, 0.604, 0.608]))
    base = np.mean([0.56, 0.565, 0.57])
    assert groups["E13j-variable"]["gap_closed"] == pytest.approx((0.604 - base) / (0.62 - base))
    assert "noise.layer_multipliers" in report["config_diff"]["E13j-variable-s0"]
    keys = {"scope", "x", "y", "pearson_r", "pearson_p", "spearman_rho", "spearman_p", "n", "ci95"}
    for c in report["correlations"]:
        assert keys <= set(c)
    layer = next(c for c in report["correlations"] if c.get("run") == "E13j-variable-s0" and c["x"] == "sigma_nominal")
    run = next(r for r in runs if r.name == "E13j-variable-s0")
    sigmas = [run.applied_sigma[i] for i in range(6)]
    assert layer["pearson_r"] == pytest.approx(sps.pearsonr(sigmas, run.delta).statistic)
    assert "n = 6 < 10" in layer["warning"] and "not independent" in layer["warning"]
    # uniform sigma by design: no sigma correlation for the baseline runs, even though their logged sigma wobbles
    assert not [c for c in report["correlations"] if c.get("run", "").startswith("E13i-baseline")
                and c["x"].startswith("sigma")]
    across = next(c for c in report["correlations"] if c["x"] == "mean_delta.relative_error")
    valid = [r for r in runs if r.valid]
    assert across["n"] == 12
    assert across["unit"].startswith("one point per run; x: the run's relative_error after training minus before")
    assert "mean |q - x| / |x|" in across["unit"] and "final accuracy (merged" in across["unit"]
    assert across["spearman_rho"] == pytest.approx(
        sps.spearmanr([np.mean(r.delta) for r in valid], [r.final_accuracy for r in valid]).statistic)
    verdicts = {v["hypothesis"]: v for v in report["verdicts"]}
    h3 = verdicts["H3"]           # variable beats baseline: arm + seed (three arms, seeds 0-2), Holm over H1 and H3
    assert report["statistics"]["analysis"]["method"] == "blocked" and h3["test"] == "blocked"
    assert "complete blocks" in report["statistics"]["analysis"]["why"]
    assert h3["verdict"] == "supported" and h3["difference"] == pytest.approx(0.604 - 0.565)
    assert h3["family_size"] == 2 and h3["p_holm"] == pytest.approx(min(1.0, 2 * h3["p"]))
    # baseline vs targeted: -0.5, -1.0, -1.5 pp seed by seed: the blocks see it, Welch across seeds does not
    assert verdicts["H1"]["verdict"] == "refuted"
    welch = build_report(runs, metric="relative_error", baseline=None, target="0.62",
                         settings=VerdictSettings(analysis="welch", margin=0.01))
    h1 = next(v for v in welch["verdicts"] if v["hypothesis"] == "H1")
    assert h1["verdict"] == "inconclusive" and h1["test"] == "welch"
    assert h1["p_holm"] > 0.05 and "would be found with 80% power" in h1["reason"]
    assert verdicts["H4"]["verdict"] == "inconclusive" and "confound" in verdicts["H4"]["reason"]
    assert verdicts["H2"]["verdict"] == "not tested"
    assert report["statistics"]["margin_pp"] == 5 and report["accuracy"] == "merged"


def test_single_seed_differences_are_inconclusive(tmp_path):
    write_run(tmp_path, "E13i-baseline", seed=0, acc=[0.4, 0.5])
    write_run(tmp_path, "E13j-variable", seed=0, acc=[0.4, 0.9], noise={"layer_multipliers": {0: 2.0}})
    report = build_report(load_runs(tmp_path, "relative_error"), metric="relative_error", baseline=None, target=None)
    h3 = next(v for v in report["verdicts"] if v["hypothesis"] == "H3")
    assert h3["verdict"] == "inconclusive" and "one run on a side" in h3["reason"]


def test_merged_and_separate_accuracies_are_never_mixed(tmp_path):
    for s in range(3):
        write_run(tmp_path, f"E13i-baseline-s{s}", seed=s, acc=[0.4, 0.5, 0.50 + 0.01 * s], merged=0.30 + 0.01 * s)
        write_run(tmp_path, f"E13j-variable-s{s}", seed=s, acc=[0.4, 0.5, 0.52 + 0.01 * s], merged=0.45 + 0.01 * s,
                  noise={"layer_multipliers": {0: 2.0, 1: 1.0}})
    merged = build_report(load_runs(tmp_path, "relative_error"), metric="relative_error", baseline=None, target=None)
    separate = build_report(load_runs(tmp_path, "relative_error", "separate"), metric="relative_error",
                            baseline=None, target=None)
    h3m = next(v for v in merged["verdicts"] if v["hypothesis"] == "H3")
    h3s = next(v for v in separate["verdicts"] if v["hypothesis"] == "H3")
    assert h3m["difference"] == pytest.approx(0.15) and h3s["difference"] == pytest.approx(0.02)
    assert merged["accuracy"] == "merged" and separate["accuracy"] == "separate"
    write_run(tmp_path, "E13k-old-s0", seed=0, acc=[0.4, 0.5], merged=None)
    runs = load_runs(tmp_path, "relative_error")
    old = next(r for r in runs if r.name == "E13k-old-s0")
    assert not old.valid and "--accuracy separate" in old.reason
    assert next(r for r in load_runs(tmp_path, "relative_error", "separate") if r.name == "E13k-old-s0").valid


def test_cli_statistics_options(study, tmp_path):
    r = srdd("correlate", study, "-o", tmp_path / "p", "--analysis", "permutation", "--margin", "2")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    s = report["statistics"]
    assert s["analysis"]["method"] == "permutation" and s["margin_pp"] == 2 and s["margin_source"] == "--margin"
    assert report["options"]["analysis"] == "permutation" and report["options"]["margin_pp"] == 2
    h3 = next(v for v in report["verdicts"] if v["hypothesis"] == "H3")
    assert h3["p"] == pytest.approx(0.1) and h3["verdict"] == "inconclusive"  # 3 vs 3: exact p cannot go lower
    assert "exact permutation test" in (tmp_path / "p" / "report.md").read_text()
    for margin, says in (("nan", "percentage points"), ("1", "below one test problem (1.56 pp at 64 problems)")):
        bad = srdd("correlate", study, "-o", tmp_path / "q", "--margin", margin)
        assert bad.returncode == 2 and says in bad.stderr and not (tmp_path / "q").exists(), bad.stderr
        assert bad.stderr.count("error:") == 1


def test_cli_writes_every_output(study, tmp_path):
    out = tmp_path / "report"
    r = srdd("correlate", study, "-o", out, "--target", "0.62")
    assert r.returncode == 0, r.stderr
    assert "left out broken" in r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["verdicts"][2]["verdict"] == "supported"
    assert {p.name for p in (out / "figures").iterdir()} == {"layer_profiles.png", "trajectories.png",
                                                             "delta_vs_accuracy.png"}
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and "http" not in page.split("<body>")[1]
    assert "## Verdicts" in (out / "report.md").read_text()
    again = srdd("correlate", study, "-o", out)
    assert again.returncode != 0 and "already exists" in again.stderr


def _expect_failure(runs, out, message):
    r = srdd("correlate", runs, "-o", out)
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*"))


def test_empty_single_mixed_and_corrupt(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _expect_failure(empty, tmp_path / "o1", "holds no run directories")
    single = tmp_path / "single"
    write_run(single, "a", seed=0, acc=[0.4, 0.5])
    _expect_failure(single, tmp_path / "o2", "a comparison needs at least 2")
    mixed = tmp_path / "mixed"
    write_run(mixed, "a", seed=0, acc=[0.4, 0.5])
    write_run(mixed, "b", seed=0, acc=[0.4, 0.5], model="other")
    _expect_failure(mixed, tmp_path / "o3", "different models")
    quant = tmp_path / "quant"
    write_run(quant, "a", seed=0, acc=[0.4, 0.5])
    write_run(quant, "b", seed=0, acc=[0.4, 0.5], quant="bf16/none")
    _expect_failure(quant, tmp_path / "o4", "different quant modes")
    corrupt = tmp_path / "corrupt"
    write_run(corrupt, "a", seed=0, acc=[0.4, 0.5])
    bad = write_run(corrupt, "b", seed=1, acc=[0.4, 0.5])
    with open(bad / "metrics.jsonl", "a") as fh:
        fh.write("{not json\n")
    _expect_failure(corrupt, tmp_path / "o5", "metrics.jsonl line 3 is corrupt")


@pytest.mark.slow
def test_report_from_smoke_runs(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    for seed in (0, 1):
        for name, extra in (("E13i-baseline", []), ("E13j-variable", ["--set", "noise.layer_multipliers={0: 2.0, 1: 1.0, 2: 0.5}"])):
            r = srdd("train", "--preset", "smoke", "--out", runs / f"{name}-s{seed}", "--set", f"seed={seed}", *extra)
            assert r.returncode == 0, r.stderr[-2000:]
    r = srdd("correlate", runs, "-o", tmp_path / "report")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["baseline"] == "E13i-baseline" and len(report["runs"]) == 4
    assert {g["group"] for g in report["results"]} == {"E13i-baseline", "E13j-variable"}


def _declared_study(tmp_path, suite_hypotheses, declared=None):
    """Runs of control, E13i-baseline, E13m-rmsnorm and E13j-variable x 4 seeds, their suite beside them."""
    from calibrate.suite import HYPOTHESES

    runs = write_pilot(tmp_path / "runs", ("control", "E13i-baseline", "E13m-rmsnorm", "E13j-variable"))
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "suite.json").write_text(json.dumps({"hypotheses": [h.to_dict() for h in
                                                                              suite_hypotheses or HYPOTHESES]}))
    (runs / "_study").mkdir()
    (runs / "_study" / "study.json").write_text(json.dumps({"suite": "../../suite", "hypotheses": declared}))
    return runs


def _correlate(capsys, *args) -> tuple[int, str]:
    """`srdd correlate` in-process (the function the console script calls), and its stderr."""
    code = main(["correlate", *map(str, args)])
    return code, capsys.readouterr().err


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr("reports.power.DRAWS", 2000)  # the detectable effects are not what these tests check


def test_the_studys_declared_family_is_confirmatory_and_the_rest_exploratory(tmp_path, capsys, quick):
    """A pilot's suite (H1-H5 only) with C1-C3 declared: C1-C3 come from the code, H3 and H5 from the suite."""
    from reports.hypotheses import from_options

    runs = _declared_study(tmp_path, None, ["C3", "C1", "C2"])
    code, err = _correlate(capsys, runs, "-o", tmp_path / "report")
    assert code == 0, err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    declared = {"hypotheses": ["C1", "C2", "C3"], "source": "the study's settings (_study/study.json)"}
    assert report["statistics"]["confirmatory"] == declared
    assert report["options"]["confirmatory"] == ["C1", "C2", "C3"]
    assert report["options"]["sources"]["hypotheses"] == declared["source"]
    family = {v["hypothesis"]: v["family"] for v in report["verdicts"]}
    assert family == {"C1": "confirmatory", "C2": "confirmatory", "C3": "confirmatory", "H1": "exploratory",
                      "H2": "exploratory", "H3": "exploratory", "H4": "exploratory", "H4b": "exploratory",
                      "H5": "exploratory"}
    assert report["statistics"]["analysis"]["exploratory"]["hypotheses"] == ["H1", "H2", "H3", "H4", "H4b", "H5"]
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Holm-adjusted across the confirmatory family C1, C2, C3 (declared: the study's settings" in text
    assert "are exploratory (Holm-adjusted among themselves" in text
    table = text.split("## Verdicts")[1].split("##")[0]
    assert all(word in table for word in ("family", "confirmatory", "exploratory"))
    o = report["options"]  # the report rebuilds from its own options, as tests/studies rebuilds committed ones
    fresh = build_report(load_runs(runs, "relative_error"), metric="relative_error", baseline=None, target=None,
                         settings=VerdictSettings.from_options(o), sources=o["sources"], hypotheses=from_options(o))
    assert json.loads(json.dumps(fresh["verdicts"])) == report["verdicts"]


def test_the_command_line_family_wins_and_unknown_keys_are_refused_by_name(tmp_path, capsys, quick):
    runs = _declared_study(tmp_path, None, ["C1", "C2", "C3"])
    code, err = _correlate(capsys, runs, "-o", tmp_path / "report", "--hypotheses", "C2")
    assert code == 0, err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["statistics"]["confirmatory"] == {"hypotheses": ["C2"], "source": "--hypotheses"}
    for args, says in ((["--hypotheses", "C2,C9,Z"], "--hypotheses: unknown C9, Z"),
                       (["--hypotheses", "C2,,C1"], "each once")):
        code, err = _correlate(capsys, runs, "-o", tmp_path / "bad", *args)
        assert code == 2 and says in err and err.count("error:") == 1, err
    (runs / "_study" / "study.json").write_text(json.dumps({"suite": "../../suite", "hypotheses": ["C7"]}))
    code, err = _correlate(capsys, runs, "-o", tmp_path / "bad")
    assert code == 2 and "the study's settings (_study/study.json): unknown C7" in err
    assert not (tmp_path / "bad").exists()


def test_the_hypotheses_are_the_suites_own_definitions(tmp_path, capsys, quick):
    """A suite that defines H3 its own way is reported its own way, whatever calibrate.suite says today;
    without a declaration its hypotheses are one family, with no labels."""
    from calibrate.suite import Hypothesis

    mine = Hypothesis("H3", "rmsnorm against variable, as this suite asked", "E13m-rmsnorm", "E13j-variable",
                      ("noise.targets", "noise.layer_multipliers"))
    runs = _declared_study(tmp_path, [mine])
    code, err = _correlate(capsys, runs, "-o", tmp_path / "report")
    assert code == 0, err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    (h3,) = report["verdicts"]
    assert (h3["hypothesis"], h3["treatment"], h3["control"], h3["question"]) == (
        "H3", "E13m-rmsnorm", "E13j-variable", mine.question)
    assert "family" not in h3 and "confirmatory" not in report["statistics"]
    assert report["options"]["hypotheses"] == [mine.to_dict()]
