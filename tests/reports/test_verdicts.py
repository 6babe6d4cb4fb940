"""Verdicts: error rates and power by simulation, the rule's edges, and simulated E13 reports end to end."""

from pathlib import Path

import numpy as np
import pytest

from calibrate.suite import ARM_VS_CONTROL, HYPOTHESES, SUITE_HYPOTHESES, Sigmas, experiments
from reports.runs import Group, RunRecord, group_runs, load_runs
from reports.verdicts import (EQUIVALENT, INCONCLUSIVE, REFUTED, SUPPORTED, VerdictSettings, assess_family, decide,
                              verdicts)

from .conftest import write_pilot

# H1-H4 of the suite over six arms: baseline appears in three comparisons, as in a real study
ARMS = ("E13i-baseline", "E13i-targeted", "E13i-high", "E13i-low", "E13j-variable", "E13k-constant")
FAMILY = [(h.treatment, h.control) for h in HYPOTHESES if h.key in ("H1", "H2", "H3", "H4")]
PAIRS = [(ARMS.index(t), ARMS.index(c)) for t, c in FAMILY]
DRAWS = 4000


def _studies(rng, seeds: int, effect: dict[str, float] | None = None, sd: float = 0.01) -> list[np.ndarray]:
    """One [draws, seeds] array of final accuracies per arm of simulated E13 studies (no seed effect)."""
    return [rng.normal(0.5 + (effect or {}).get(arm, 0.0) * sd, sd, (DRAWS, seeds)) for arm in ARMS]


def simulate_family(arms: list[np.ndarray], settings: VerdictSettings = VerdictSettings()) -> np.ndarray:
    return decide(arms, [list(range(arms[0].shape[-1]))] * len(arms), PAIRS, settings).codes


def _pair(a, b, settings: VerdictSettings = VerdictSettings()) -> dict:
    rows, _ = assess_family([a, b], [list(range(len(a))), list(range(len(b)))], [(0, 1)], settings)
    return rows[0]


@pytest.mark.parametrize("seeds", [3, 5])
def test_no_true_effect_keeps_false_findings_below_alpha(seeds):
    codes = simulate_family(_studies(np.random.default_rng(seeds), seeds))
    findings = np.isin(codes, (SUPPORTED, REFUTED))
    mc = 3 * np.sqrt(0.05 * 0.95 / DRAWS)  # three Monte-Carlo standard errors
    assert findings.mean() <= 0.05 + mc                   # per comparison
    assert findings.any(axis=1).mean() <= 0.05 + mc       # family-wise (Holm)


def test_the_old_spread_rule_was_not_a_test():
    """|difference| > sqrt(s1^2 + s2^2) at 3 seeds: about 15 % false findings with no effect (lesson 10)."""
    arms = _studies(np.random.default_rng(0), 3)
    treat, ctrl = (np.stack([arms[p[i]] for p in PAIRS], axis=1) for i in (0, 1))
    spread = np.sqrt(treat.std(-1, ddof=1) ** 2 + ctrl.std(-1, ddof=1) ** 2)
    old = np.abs(treat.mean(-1) - ctrl.mean(-1)) > spread
    new = np.isin(simulate_family(arms), (SUPPORTED, REFUTED))
    assert old.mean() > 0.10 and new.mean() < 0.05


@pytest.mark.parametrize("seeds, sds", [(5, 5.0), (4, 5.0), (3, 6.0)])
def test_large_effects_are_found(seeds, sds):
    """A variable arm better by `sds` seed-sds is called supported (H3) at least 80 % of the time.

    With no seed effect the blocks carry nothing, and the arm + seed model still does as well as Welch:
    the report's detectable |difference| says what each arm could see.
    """
    codes = simulate_family(_studies(np.random.default_rng(seeds), seeds, {"E13j-variable": sds}))
    h3 = [h for h in FAMILY].index(("E13j-variable", "E13i-baseline"))
    assert (codes[:, h3] == SUPPORTED).mean() >= 0.8
    others = np.delete(codes, h3, axis=1)
    assert np.isin(others, (SUPPORTED, REFUTED)).mean() <= 0.05


def test_rule_edges():
    settings = VerdictSettings(margin=0.01)
    two_seeds = _pair([0.60, 0.61], [0.40, 0.42], settings)
    assert two_seeds["verdict"] == "inconclusive" and "needs >= 3" in two_seeds["reason"]
    assert two_seeds["p"] < 0.05  # significant, yet not a finding at 2 seeds
    worse = _pair([0.40, 0.41, 0.42], [0.60, 0.62, 0.61], settings)
    assert worse["verdict"] == "refuted" and worse["difference"] < 0
    same = _pair([0.500, 0.501, 0.499, 0.5005], [0.5002, 0.4998, 0.5001, 0.5], settings)
    assert same["verdict"] == "equivalent within ±1 pp" and same["p_equivalence_holm"] < 0.05
    noisy = _pair([0.45, 0.55, 0.50], [0.47, 0.52, 0.58], settings)
    assert noisy["verdict"] == "inconclusive" and noisy["detectable_effect"] > 0.05
    assert f"{noisy['detectable_effect']:.4f}" in noisy["reason"]
    family, analysis = assess_family([[0.60, 0.61, 0.62], [0.50, 0.52, 0.51], [0.50, 0.52, 0.51], [0.49, 0.50, 0.53]],
                                     [[0, 1, 2]] * 4, [(0, 1), (2, 3)])
    assert [r["family_size"] for r in family] == [2, 2] and analysis["method"] == "blocked"
    assert family[0]["p_holm"] == pytest.approx(min(1, 2 * family[0]["p"]))


def _e13_groups(rng, seeds: int, effect: dict[str, float] | None = None) -> list[Group]:
    exps = {e.name: e for e in experiments(Sigmas(), (3, 4, 5), {i: 1.0 + 0.1 * i for i in range(8)},
                                           targets=["linear"], exclude=[])}
    groups = []
    for arm in ARMS:
        runs = []
        for s in range(seeds):
            acc = float(rng.normal(0.5 + (effect or {}).get(arm, 0.0) * 0.01, 0.01))
            config = {"model": "m", "seed": s, "quant": {"format": "nvfp4", "mode": "w4a4"},
                      "noise": exps[arm].noise}
            runs.append(RunRecord(name=f"{arm}-s{s}", path=Path(arm), config=config, status="complete",
                                  trajectory=[(10, acc)], merged=[(10, acc)], accuracy_kind="merged"))
        groups.append(Group(arm, runs))
    return groups


def test_simulated_e13_reports_end_to_end(monkeypatch):
    """verdicts() on groups of runs (names, configs, confound check, Holm) as `srdd correlate` builds them."""
    monkeypatch.setattr("reports.power.DRAWS", 2000)  # the detectable effects are not what this test checks
    rng = np.random.default_rng(11)
    calls = total = 0
    for _ in range(60):
        rows = {r["hypothesis"]: r for r in verdicts(_e13_groups(rng, 3))[0]}
        assert {k for k, r in rows.items() if r["verdict"] == "not tested"} == {"H4b", "H5"}
        tested = [rows[k] for k in ("H1", "H2", "H3", "H4")]
        assert all(r["family_size"] == 4 for r in tested)
        calls += sum(r["verdict"] in ("supported", "refuted") for r in tested)
        total += 4
    assert calls / total < 0.08
    found = sum(next(r for r in verdicts(_e13_groups(rng, 3, {"E13j-variable": 8.0}))[0]
                     if r["hypothesis"] == "H3")["verdict"] == "supported" for _ in range(20))
    assert found >= 16


def test_confounded_arms_are_left_out_of_the_family():
    rng = np.random.default_rng(0)
    groups = _e13_groups(rng, 3)
    constant = next(g for g in groups if g.name == "E13k-constant")
    for r in constant.runs:
        r.config = {**r.config, "grpo": {"steps": 99}}
    rows = {r["hypothesis"]: r for r in verdicts(groups)[0]}
    assert rows["H4"]["verdict"] == "inconclusive" and "confound" in rows["H4"]["reason"]
    assert rows["H1"]["family_size"] == 3


def test_settings_are_validated():
    for bad in ({"margin": 0.0}, {"margin": float("nan")}, {"alpha": 1.5}, {"min_seeds": 1}, {"analysis": "t"}):
        with pytest.raises(ValueError):
            VerdictSettings(**bad)
    assert INCONCLUSIVE == 0 and EQUIVALENT not in (SUPPORTED, REFUTED)


def test_a_declared_family_is_adjusted_alone_and_every_other_hypothesis_is_exploratory(tmp_path, monkeypatch):
    """Holm across C1-C3 only (statsmodels' multipletests), the same tests as a report of C1-C3 alone; the other
    hypotheses adjusted among themselves and labelled; without a declaration, one family and no labels."""
    from statsmodels.stats.multitest import multipletests

    monkeypatch.setattr("reports.power.DRAWS", 2000)  # the detectable effects are not what this test checks
    root = write_pilot(tmp_path / "runs", ("control", "E13i-baseline", "E13i-targeted", "E13m-rmsnorm",
                                           "E13j-variable"), flip=0.2)
    groups = group_runs([r for r in load_runs(root, "relative_error") if r.valid])
    rows, analysis = verdicts(groups, VerdictSettings(confirmatory=("C1", "C2", "C3")), SUITE_HYPOTHESES)
    confirmatory = [r for r in rows if r["family"] == "confirmatory"]
    exploratory = [r for r in rows if r["family"] == "exploratory" and r.get("p") is not None]
    assert [r["hypothesis"] for r in rows[:3]] == ["C1", "C2", "C3"] and len(rows) == len(SUITE_HYPOTHESES)
    assert [r["hypothesis"] for r in exploratory] == ["H1", "H3", "H5"]
    for family in (confirmatory, exploratory):
        p = [r["p"] for r in family]
        assert [r["p_holm"] for r in family] == pytest.approx(list(multipletests(p, method="holm")[1]), rel=1e-12)
        assert all(r["family_size"] == len(family) for r in family)
    alone = verdicts(groups, VerdictSettings(), ARM_VS_CONTROL)[0]
    assert [r["p"] for r in confirmatory] == [r["p"] for r in alone]
    assert analysis["hypotheses"] == ["C1", "C2", "C3"] and sorted(analysis["arms"]) == sorted(
        ["control", "E13i-baseline", "E13m-rmsnorm", "E13j-variable"])
    assert analysis["exploratory"]["hypotheses"] == [h.key for h in HYPOTHESES]
    undeclared, one = verdicts(groups, VerdictSettings(), SUITE_HYPOTHESES)
    assert not any("family" in r for r in undeclared) and "exploratory" not in one
    assert {r["family_size"] for r in undeclared if r.get("p") is not None} == {6}
    with pytest.raises(ValueError, match="C9"):
        verdicts(groups, VerdictSettings(confirmatory=("C9",)), SUITE_HYPOTHESES)
