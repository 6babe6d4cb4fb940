"""A real study end to end: `srdd train --preset learn` runs of two arms, then `srdd correlate` on them.

The `learn` preset is the one tiny setup whose policy learns (strict reward > 0),
so the numbers a report computes are not all zeros here: accuracy moves, the
rescans move, the across-runs correlation is defined, and every statistic the
report shows can be recomputed from the run directories with scipy.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

# four real learn runs before the first assertion: ~45 s, so with the slow tests (CI runs them too)
pytestmark = pytest.mark.slow

ARMS = {"E13i-baseline": [], "E13j-variable": ["--set", "noise.layer_multipliers={0: 2.0, 1: 1.0, 2: 0.5}"]}
SEEDS = (0, 1)
# Two runs share the two cores; a 64-wide model gains nothing from intra-op threads, and two
# processes spinning on each other's threads are several times slower than one thread each.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _srdd(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["srdd", *map(str, args)], capture_output=True, text=True, timeout=600, env=ENV)


def _evaluations(run: Path) -> tuple[dict[int, float], float]:
    """(separate accuracy by step, merged accuracy at the final step), read from metrics.jsonl."""
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    separate = {line["step"]: line["accuracy"] for line in lines if line.get("accuracy") is not None}
    merged = [line["eval_merged"]["accuracy"] for line in lines if line.get("eval_merged")]
    assert len(merged) == 1
    return separate, merged[0]


def _relative_errors(path: Path) -> list[float]:
    return [layer["block_output"]["relative_error"] for layer in json.loads(path.read_text())["layers"]]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("learn")
    runs = root / "runs"
    runs.mkdir()
    jobs = [("train", "--preset", "learn", "--out", runs / f"{arm}-s{seed}", "--set", f"seed={seed}", *extra)
            for arm, extra in ARMS.items() for seed in SEEDS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for result in pool.map(lambda job: _srdd(*job), jobs):
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    result = _srdd("correlate", runs, "-o", root / "report")
    assert result.returncode == 0, result.stderr
    return runs, json.loads((root / "report" / "report.json").read_text())


def test_the_policy_learns_and_the_rescans_move(study):
    runs, report = study
    assert len(report["runs"]) == len(ARMS) * len(SEEDS)
    for run in sorted(runs.iterdir()):
        separate, merged = _evaluations(run)
        final = separate[max(separate)]
        assert separate[0] == 0.0 and final > 0.0, (run.name, separate)  # a random policy never answers strictly
        assert merged > 0.0
        before, after = _relative_errors(run / "scan_before.json"), _relative_errors(run / "scan_after.json")
        assert len(before) == len(after) == 3 and np.abs(np.subtract(after, before)).max() > 0


def _finals(runs: Path, report: dict, kind: str) -> list[float]:
    """Final accuracies (`kind`: merged | separate) in the report's run order, read from the run dirs."""
    out = []
    for entry in report["runs"]:
        separate, merged = _evaluations(runs / entry["path"])
        out.append(merged if kind == "merged" else separate[max(separate)])
    return out


def test_the_across_runs_correlation_equals_scipy(study):
    runs, report = study
    finals = _finals(runs, report, "merged")
    assert report["accuracy"] == "merged" and [r["final_accuracy"] for r in report["runs"]] == finals
    assert np.ptp(finals) > 0  # the runs differ, so the correlation below is defined
    mean_delta = [np.mean(np.subtract(_relative_errors(runs / r["path"] / "scan_after.json"),
                                      _relative_errors(runs / r["path"] / "scan_before.json")))
                  for r in report["runs"]]
    c = next(c for c in report["correlations"] if c["x"] == "mean_delta.relative_error")
    assert c["n"] == len(finals) and "n = 4 < 10" in c["warning"]
    assert c["pearson_r"] == pytest.approx(sps.pearsonr(mean_delta, finals).statistic, abs=1e-9)
    assert c["pearson_p"] == pytest.approx(sps.pearsonr(mean_delta, finals).pvalue, rel=1e-6)
    assert c["spearman_rho"] == pytest.approx(sps.spearmanr(mean_delta, finals).statistic, abs=1e-9)


def test_the_verdict_is_the_seed_blocked_contrast_of_the_final_accuracies(study):
    """Two arms with seeds 0 and 1 each are complete blocks: the arm + seed model is the paired t-test."""
    runs, report = study
    finals: dict[str, list[float]] = {}
    for entry, acc in zip(report["runs"], _finals(runs, report, "merged")):
        finals.setdefault(entry["group"], []).append(acc)
    h3 = next(v for v in report["verdicts"] if v["hypothesis"] == "H3")
    assert (h3["treatment"], h3["control"]) == ("E13j-variable", "E13i-baseline")
    assert report["statistics"]["analysis"]["method"] == "blocked" and h3["test"] == "blocked"
    reference = sps.ttest_rel(finals["E13j-variable"], finals["E13i-baseline"])  # runs in seed order in both
    if np.isnan(reference.pvalue):
        assert h3["p"] is None
    else:
        assert h3["p"] == pytest.approx(reference.pvalue, rel=1e-9)
    assert h3["difference"] == pytest.approx(np.mean(finals["E13j-variable"]) - np.mean(finals["E13i-baseline"]))
    assert h3["verdict"] == "inconclusive" and "seeds" in h3["reason"]  # 2 seeds per arm can never decide


def test_the_separate_accuracy_report_reads_the_other_evaluation(study, tmp_path):
    runs, report = study
    result = _srdd("correlate", runs, "-o", tmp_path / "separate", "--accuracy", "separate")
    assert result.returncode == 0, result.stderr
    separate = json.loads((tmp_path / "separate" / "report.json").read_text())
    assert separate["accuracy"] == "separate"
    assert [r["final_accuracy"] for r in separate["runs"]] == _finals(runs, separate, "separate")
