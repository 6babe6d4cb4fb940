from fractions import Fraction

import pytest

from calibrate.multipliers import Mode, compute, damage, round2

from .conftest import REL


def test_round2_is_half_up_on_the_decimal_form():
    assert round2(0.825) == 0.83 and round2(1.165) == 1.17 and round2(0.875) == 0.88 and round2(1.0049) == 1.0


def test_proportional_reproduces_the_published_multipliers():
    m = compute(Mode.PROPORTIONAL, REL)
    assert (m[0], m[15], m[27]) == (0.83, 1.17, 0.88)
    mean = sum(map(Fraction, REL)) / len(REL)
    for v, got in zip(REL, m):
        assert abs(Fraction(got) - Fraction(v) / mean) <= Fraction(1, 200) + Fraction(1, 10**12)


def test_inverse_and_ceiling_follow_their_formulas():
    p = compute(Mode.PROPORTIONAL, REL)
    inv = compute(Mode.INVERSE, REL)
    assert inv == [round2(2 - x) for x in p]
    ceil = compute(Mode.CEILING, REL)
    top = max(2 - x for x in p)
    assert ceil == [round2((2 - x) / top) for x in p]
    assert max(ceil) == 1.0


def test_tiers_and_targeted():
    tiers = compute(Mode.TIERS, REL)
    assert set(tiers) <= {1.5, 1.2, 1.0} and tiers[15] == 1.5 and tiers[27] == 1.0
    targeted = compute(Mode.TARGETED, REL, band=tuple(range(10, 20)))
    assert targeted == [1.0 if 10 <= i < 20 else 0.0 for i in range(28)]


def test_sqnr_uses_noise_power_so_lower_sqnr_gets_more():
    v = damage("sqnr_db", [10.0, 20.0])
    assert v == pytest.approx([0.1, 0.01])
    assert compute(Mode.PROPORTIONAL, v) == [1.82, 0.18]
