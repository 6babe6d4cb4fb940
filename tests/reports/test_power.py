"""The detectable effect has the power it claims, to ±0.01: fresh simulations through the analyses' own p-values."""

import numpy as np
import pytest

from reports.blocked import compare_blocked
from reports.compare import Method, compare
from reports.power import detectable_for_report, noncentral_t_power

PAIRS = [(0, 1), (2, 3), (4, 0), (0, 5)]
VARIANCES = np.array([0.03, 0.012, 0.02, 0.015, 0.018, 0.01]) ** 2
ALPHA = 0.05 / 4
FRESH = 100_000  # Monte-Carlo sd of a power near 0.8: 0.0013; with the reported one's, the sum stays < 0.004


def _fresh_power(method: Method, delta: float, pair: int, seeds: int, variances: np.ndarray) -> float:
    rng = np.random.default_rng(12345)
    y = rng.standard_normal((FRESH, len(variances), seeds)) * np.sqrt(variances)[:, None]
    y += rng.standard_normal((FRESH, 1, seeds)) * 0.02  # seed blocks: they cancel, as in the analysis
    y[:, PAIRS[pair][0]] += delta
    return float(np.mean(compare_blocked(y, [PAIRS[pair]], method).p[:, 0] < ALPHA))


@pytest.mark.parametrize("seeds", [3, 5])
@pytest.mark.parametrize("method", [Method.BLOCKED, Method.POOLED])
def test_blocked_detectable_effect_has_its_power(method, seeds):
    pooled = (float(VARIANCES.mean()), (len(VARIANCES) - 1) * (seeds - 1))
    found, how = detectable_for_report(method, VARIANCES, seeds, PAIRS, ALPHA, pooled=pooled)
    assert ("exact noncentral t" in how) == (method is Method.POOLED)
    truth = VARIANCES if method is Method.BLOCKED else np.full(len(VARIANCES), VARIANCES.mean())  # its model
    for pair in (0, 1):
        power = _fresh_power(method, found[pair], pair, seeds, truth)
        assert abs(power - 0.8) < 0.01, (pair, found[pair], power)


def test_welch_detectable_effect_has_its_power():
    """Welch's arms carry the seed variance too (Welch cannot remove it): the report passes their full sds."""
    seeds = 3
    full = VARIANCES + 0.02**2
    found, how = detectable_for_report(Method.WELCH, full, seeds, PAIRS, ALPHA)
    assert "100,000 draws" in how and "±0.0013" in how
    rng = np.random.default_rng(7)
    a = rng.standard_normal((FRESH, seeds)) * np.sqrt(full[0]) + found[0]
    b = rng.standard_normal((FRESH, seeds)) * np.sqrt(full[1])
    power = float(np.mean(compare(a, b).p < ALPHA))
    assert abs(power - 0.8) < 0.01, power
    assert detectable_for_report(Method.WELCH, full, seeds, PAIRS, 0.05)[0][0] < found[0]  # looser level


def test_noncentral_t_is_exact_for_the_pooled_analysis():
    seeds, delta = 4, 0.04
    se = np.sqrt(2 * VARIANCES.mean() / seeds)
    df = (len(VARIANCES) - 1) * (seeds - 1)
    rng = np.random.default_rng(3)
    y = rng.standard_normal((FRESH, len(VARIANCES), seeds)) * np.sqrt(VARIANCES.mean())
    y[:, 0] += delta
    simulated = np.mean(compare_blocked(y, [(0, 1)], Method.POOLED).p[:, 0] < ALPHA)
    assert noncentral_t_power(delta, se, df, ALPHA) == pytest.approx(simulated, abs=0.005)
