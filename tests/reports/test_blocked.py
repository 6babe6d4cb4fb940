"""The arm + seed analysis: against statsmodels on a fixture, and by simulation against the targets of issue 23.

Simulations (six arms sharing seeds, H1-H4 of the suite, seed effect sd 0.015, residual sd 0.026) go
through `decide`, the function `verdicts()` (and so `srdd correlate`) turns runs into verdicts with,
vectorised over 4000 studies per cell: a Monte-Carlo sd of at most 0.0035 on a rate near 5 %, 0.0047
near 90 % and 0.008 near 50 %.
"""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from calibrate.suite import HYPOTHESES
from reports.blocked import arm_variances, compare_blocked, heterogeneity, satterthwaite_df
from reports.compare import Method
from reports.verdicts import REFUTED, SUPPORTED, VerdictSettings, decide

sm = pytest.importorskip("statsmodels.formula.api")

ARMS = ("E13i-baseline", "E13i-targeted", "E13i-high", "E13i-low", "E13j-variable", "E13k-constant")
FAMILY = [h for h in HYPOTHESES if h.key in ("H1", "H2", "H3", "H4")]
PAIRS = [(ARMS.index(h.treatment), ARMS.index(h.control)) for h in FAMILY]
H3 = [h.key for h in FAMILY].index("H3")
SEED_SD, RESIDUAL_SD = 0.015, 0.026
SD = float(np.hypot(SEED_SD, RESIDUAL_SD))
"""An arm's seed-to-seed sd: the unit of the issue's "+4 sd" (its Welch powers 0.51/0.91/0.99 are in it)."""
DRAWS = 4000

# a fixture: 6 arms x 4 seeds, one arm much noisier, seed effects
FIXTURE = np.array([[0.231, 0.262, 0.204, 0.250], [0.219, 0.281, 0.198, 0.262], [0.305, 0.190, 0.262, 0.141],
                    [0.244, 0.258, 0.215, 0.277], [0.265, 0.301, 0.238, 0.286], [0.228, 0.274, 0.190, 0.255]])


def _frame(y: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame([{"acc": y[a, s], "arm": f"a{a}", "seed": f"s{s}"} for a in range(y.shape[0])
                         for s in range(y.shape[1])])


def _contrast(fit, t: int, c: int) -> np.ndarray:
    names = fit.model.exog_names
    L = np.zeros(len(names))
    for arm, sign in ((t, 1.0), (c, -1.0)):
        if arm:  # a0 is the reference level
            L[names.index(f"C(arm)[T.a{arm}]")] = sign
    return L


def test_pooled_contrasts_equal_statsmodels_ols():
    fit = sm.ols("acc ~ C(arm) + C(seed)", _frame(FIXTURE)).fit()
    pairs = [(1, 0), (2, 3), (4, 0), (0, 5), (2, 5)]
    ours = compare_blocked(FIXTURE, pairs, Method.POOLED)
    for k, (t, c) in enumerate(pairs):
        test = fit.t_test(_contrast(fit, t, c))
        assert ours.difference[k] == pytest.approx(float(test.effect[0]), abs=1e-10)
        assert ours.se[k] == pytest.approx(float(test.sd[0, 0]), abs=1e-10)
        assert ours.df[k] == fit.df_resid
        assert ours.p[k] == pytest.approx(float(test.pvalue), abs=1e-10)
        ci = test.conf_int(alpha=0.05)[0]
        assert [ours.ci_low[k], ours.ci_high[k]] == pytest.approx(list(ci), abs=1e-10)


@pytest.mark.filterwarnings("ignore:The MLE may be on the boundary")  # a false alarm: the seed variance is 0.009
def test_pooled_se_equals_a_mixed_model_with_random_seed_intercepts():
    """The issue's remark: with complete blocks the fixed-seed SE is MixedLM's (REML) when the seed variance is
    estimated > 0."""
    y = FIXTURE.copy()
    y += np.array([0.08, -0.06, 0.1, -0.12])  # a clear seed block so the REML variance is interior
    mixed = sm.mixedlm("acc ~ C(arm)", _frame(y), groups="seed").fit(reml=True)
    ours = compare_blocked(y, [(1, 0)], Method.POOLED)
    assert ours.se[0] == pytest.approx(float(mixed.bse["C(arm)[T.a1]"]), rel=1e-4)


def test_per_arm_contrasts_equal_an_independent_computation():
    """Per-arm variances from statsmodels' OLS residuals; the df from the quadratic form's moments, numerically."""
    fit = sm.ols("acc ~ C(arm) + C(seed)", _frame(FIXTURE)).fit()
    arms, seeds = FIXTURE.shape
    resid = fit.resid.to_numpy().reshape(arms, seeds)
    v = (resid**2).sum(1) * arms / ((arms - 1) * (seeds - 1))
    assert arm_variances(FIXTURE) == pytest.approx(v, abs=1e-12)
    X = fit.model.exog
    P = np.eye(arms * seeds) - X @ np.linalg.pinv(X)  # residual projector of the fitted design
    Sigma = np.diag(np.repeat(v, seeds))
    pairs = [(1, 0), (2, 3), (4, 0), (0, 5)]
    ours = compare_blocked(FIXTURE, pairs, Method.BLOCKED)
    k_ = arms / ((arms - 1) * (seeds - 1))
    for k, (t, c) in enumerate(pairs):
        E = np.diag(np.repeat(np.isin(np.arange(arms), (t, c)).astype(float), seeds))
        Q = k_ / seeds * P @ E @ P  # (v_t + v_c)/n as y'Qy
        assert float(FIXTURE.ravel() @ Q @ FIXTURE.ravel()) == pytest.approx(ours.se[k] ** 2, abs=1e-12)
        mean, var = np.trace(Q @ Sigma), 2 * np.trace(Q @ Sigma @ Q @ Sigma)
        assert ours.df[k] == pytest.approx(2 * mean**2 / var, abs=1e-10)
        test = fit.t_test(_contrast(fit, t, c))
        assert ours.difference[k] == pytest.approx(float(test.effect[0]), abs=1e-10)
        assert ours.p[k] == pytest.approx(2 * sps.t.sf(abs(ours.difference[k]) / ours.se[k], ours.df[k]), abs=1e-12)


def test_two_arms_are_the_paired_t_test_and_equal_variances_give_the_closed_form_df():
    a, b = FIXTURE[0], FIXTURE[4]
    paired = sps.ttest_rel(a, b)
    for method in (Method.BLOCKED, Method.POOLED):
        c = compare_blocked(np.stack([a, b]), [(0, 1)], method)
        assert c.p[0] == pytest.approx(paired.pvalue, abs=1e-12) and c.df[0] == pytest.approx(3)
    A, n = 6, 3
    df = satterthwaite_df(np.ones(A), [(0, 1)], n)
    assert df[0] == pytest.approx(2 * (n - 1) * (A - 1) ** 2 / ((A - 1) ** 2 + 1))
    h = heterogeneity(FIXTURE)
    groups = list(FIXTURE - FIXTURE.mean(1, keepdims=True) - FIXTURE.mean(0) + FIXTURE.mean())
    assert h["bartlett_p"] == pytest.approx(sps.bartlett(*groups).pvalue)


def _studies(seeds: int, *, baseline_ratio: float = 1.0, effect_sds: float = 0.0, seed: int = 0) -> list:
    """Final accuracies of DRAWS simulated six-arm studies, one [draws, seeds] array per arm."""
    rng = np.random.default_rng([seeds, int(10 * baseline_ratio), int(effect_sds), seed])
    sd = np.full(len(ARMS), RESIDUAL_SD)
    sd[ARMS.index("E13i-baseline")] *= baseline_ratio
    y = 0.2 + rng.normal(0, SEED_SD, (DRAWS, 1, seeds)) + rng.normal(0, 1, (DRAWS, len(ARMS), seeds)) * sd[:, None]
    y[:, ARMS.index("E13j-variable")] += effect_sds * SD
    return list(np.moveaxis(y, 1, 0))


def _run(arms, seeds: int, analysis: str = "auto") -> np.ndarray:
    return decide(arms, [list(range(seeds))] * len(ARMS), PAIRS, VerdictSettings(analysis=analysis)).codes


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize("ratio", [1.0, 3.0])
def test_false_findings_stay_below_five_percent(seeds, ratio):
    codes = _run(_studies(seeds, baseline_ratio=ratio), seeds)
    false = np.isin(codes, (SUPPORTED, REFUTED)).mean()
    assert false <= 0.05
    assert false <= 0.03  # the per-arm variances keep it near Welch's, far from pooling's 7-8 %
    if ratio == 3.0:  # the pooled variance, declared, is not safe here: what the default protects against
        pooled = np.isin(_run(_studies(seeds, baseline_ratio=ratio), seeds, "pooled"), (SUPPORTED, REFUTED)).mean()
        assert pooled > 0.06


@pytest.mark.parametrize("seeds, target", [(4, 0.90), (5, 0.98)])
def test_four_sd_effect_is_found(seeds, target):
    codes = _run(_studies(seeds, effect_sds=4.0), seeds)
    assert (codes[:, H3] == SUPPORTED).mean() >= target
    assert np.isin(np.delete(codes, H3, axis=1), (SUPPORTED, REFUTED)).mean() <= 0.05


@pytest.mark.parametrize("seeds", [3, 4, 5])
@pytest.mark.parametrize("ratio", [1.0, 3.0])
def test_never_less_often_than_welch(seeds, ratio):
    arms = _studies(seeds, baseline_ratio=ratio, effect_sds=4.0)
    blocked = (_run(arms, seeds)[:, H3] == SUPPORTED).mean()
    welch = (_run(arms, seeds, "welch")[:, H3] == SUPPORTED).mean()
    mc = 3 * np.sqrt(0.25 / DRAWS)  # three Monte-Carlo sds of a difference of paired rates, at worst
    assert blocked >= welch - mc, (blocked, welch)


def test_incomplete_blocks_fall_back_to_welch_and_say_why():
    arms = [np.array([0.2, 0.25, 0.22]) + 0.01 * a for a in range(len(ARMS))]
    seeds = [[0, 1, 2]] * len(ARMS)
    seeds[4] = [0, 1, 3]
    d = decide(arms, seeds, PAIRS)
    assert d.method is Method.WELCH and "incomplete blocks" in d.why and "0, 1, 3" in d.why
    declared = decide(arms, seeds, PAIRS, VerdictSettings(analysis="pooled"))
    assert declared.method is Method.WELCH  # a declared pooled variance needs complete blocks too
    shuffled = decide([a[::-1] for a in arms], [[2, 1, 0]] * len(ARMS), PAIRS)
    ordered = decide(arms, [[0, 1, 2]] * len(ARMS), PAIRS)
    assert shuffled.method is Method.BLOCKED and np.allclose(shuffled.comparison.p, ordered.comparison.p)
