"""Two-arm tests against scipy, TOST against two one-sided scipy tests, Holm against its definition."""

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from reports.compare import Method, compare, equivalence_p, holm


def test_welch_equals_scipy():
    a, b = [0.52, 0.55, 0.49, 0.58], [0.47, 0.44, 0.50]
    c = compare(a, b)
    ref = sps.ttest_ind(a, b, equal_var=False)
    ci = ref.confidence_interval(0.95)
    d = c.to_dict()
    assert d["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert d["df"] == pytest.approx(ref.df, rel=1e-12)
    assert d["ci95"] == pytest.approx([ci.low, ci.high], rel=1e-12)
    assert d["difference"] == pytest.approx(np.mean(a) - np.mean(b))
    assert d["sd_treatment"] == pytest.approx(np.std(a, ddof=1)) and d["n_control"] == 3
    assert d["test"] == "welch" and d["note"] is None


def test_permutation_is_exact_and_cannot_reach_005_at_three_seeds():
    a, b = [0.61, 0.62, 0.63], [0.41, 0.42, 0.43]
    c = compare(a, b, Method.PERMUTATION).to_dict()
    # all 20 relabellings of 6 runs into 3 + 3: the observed split and its mirror are the extremes
    pooled = a + b
    diffs = [np.mean([pooled[i] for i in idx]) - np.mean([pooled[i] for i in range(6) if i not in idx])
             for idx in itertools.combinations(range(6), 3)]
    observed = np.mean(a) - np.mean(b)
    assert c["p"] == pytest.approx(np.mean([abs(d) >= abs(observed) - 1e-12 for d in diffs]))
    assert c["p"] == pytest.approx(0.1)
    ref = sps.permutation_test((a, b), lambda x, y, axis: x.mean(axis) - y.mean(axis), vectorized=True,
                               permutation_type="independent", n_resamples=np.inf)
    assert c["p"] == pytest.approx(ref.pvalue)


def test_undefined_comparisons_say_why():
    one = compare([0.5], [0.4, 0.45, 0.5]).to_dict()
    assert one["p"] is None and "one run" in one["note"]
    flat = compare([0.5, 0.5, 0.5], [0.4, 0.4, 0.4]).to_dict()
    assert flat["p"] is None and flat["ci95"] is None and "same accuracy" in flat["note"]


def test_equivalence_is_two_one_sided_welch_tests():
    a, b, m = [0.500, 0.502, 0.498, 0.501], [0.499, 0.500, 0.501, 0.500], 0.005
    lower = sps.ttest_ind(np.add(a, m), b, equal_var=False, alternative="greater").pvalue
    upper = sps.ttest_ind(np.subtract(a, m), b, equal_var=False, alternative="less").pvalue
    assert float(equivalence_p(compare(a, b), m)) == pytest.approx(max(lower, upper), rel=1e-12)
    assert float(equivalence_p(compare(a, b), m)) < 0.05
    assert float(equivalence_p(compare([0.50, 0.55, 0.45], [0.5, 0.52, 0.48]), m)) > 0.05  # too noisy


def _holm_by_definition(p):
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def test_holm_matches_its_definition_and_skips_missing():
    rng = np.random.default_rng(3)
    for m in (1, 2, 4, 7):
        p = list(rng.uniform(0, 0.2, m))
        assert holm(p) == pytest.approx(_holm_by_definition(p))
    with_missing = holm([0.01, np.nan, 0.04])
    assert np.isnan(with_missing[1])
    assert list(with_missing[[0, 2]]) == pytest.approx(_holm_by_definition([0.01, 0.04]))
    batch = rng.uniform(0, 0.1, (5, 4))
    assert holm(batch) == pytest.approx(np.array([_holm_by_definition(list(row)) for row in batch]))
