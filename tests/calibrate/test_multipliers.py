from decimal import Decimal

import pytest

from calibrate.multipliers import Mode, Tiers, compute, damage, parse_clip, round2, statistics_of
from calibrate.noise_file import high_error_band
from srdd.errors import SrddError
from srdd.zones import ZoneRule, layer_zones

from .conftest import HIGH_ERROR_BAND, PUBLISHED_MULTIPLIERS, REL, SQNR


def mults(mode, values, metric="relative_error", **kw):
    return [float(m.multiplier) for m in compute(mode, damage(metric, values), **kw)]


def test_round2_rounds_halves_up_on_the_decimal_value():
    assert [round2(x) for x in (0.825, 0.925, 1.165, 0.875, 1.0049, -0.825)] == \
        [Decimal(t) for t in ("0.83", "0.93", "1.17", "0.88", "1.00", "-0.83")]
    assert round(0.825, 2) == 0.82 and round(0.925, 2) == 0.93  # binary floats: the tie goes either way


def test_ratio_ties_are_exact_where_floats_are_not():
    # 0.33 / 0.4 = 0.825 exactly; in binary floating point it is 0.82499999..., which round() sends to 0.82
    assert round(0.33 / 0.4, 2) == 0.82
    assert mults(Mode.PROPORTIONAL, [0.33, 0.47]) == [0.83, 1.18]


def test_proportional_reproduces_the_published_table_exactly():
    assert dict(enumerate(mults(Mode.PROPORTIONAL, REL))) == PUBLISHED_MULTIPLIERS
    assert statistics_of(damage("relative_error", REL)).mean == Decimal("0.364")


def test_layer_3_is_a_tie_that_needs_half_up():
    result = compute(Mode.PROPORTIONAL, damage("relative_error", REL))[3]
    assert result.why == "round(0.3367 / 0.364, 2) = round(0.925, 2) = 0.93"
    assert Decimal("0.925").quantize(Decimal("0.01"), rounding="ROUND_HALF_EVEN") == Decimal("0.92")


def test_inverse_is_two_minus_proportional():
    p = mults(Mode.PROPORTIONAL, REL)
    inv = mults(Mode.INVERSE, REL)
    assert [Decimal(repr(x)) for x in inv] == [2 - Decimal(repr(x)) for x in p]
    assert inv[15] == 0.83 and inv[26] == 1.21


def test_ceiling_is_inverse_over_its_maximum():
    p = [Decimal(repr(x)) for x in mults(Mode.PROPORTIONAL, REL)]
    top = max(2 - x for x in p)
    assert top == Decimal("1.21")  # layer 26, the smallest error
    ceil = mults(Mode.CEILING, REL)
    assert [Decimal(repr(x)) for x in ceil] == [round2((2 - x) / top) for x in p]
    assert max(ceil) == 1.0 and ceil[26] == 1.0 and ceil[15] == 0.69  # 0.83 / 1.21 = 0.6859...


def test_tiers_follow_z_scores_and_are_configurable():
    tiers = mults(Mode.TIERS, REL)
    assert [i for i, t in enumerate(tiers) if t == 1.5] == HIGH_ERROR_BAND
    assert set(tiers) == {1.5, 1.2, 1.0} and tiers[26] == 1.0 and tiers[8] == 1.2
    custom = mults(Mode.TIERS, REL, tiers=Tiers.parse("1.5:2.0,0:1.0,0.5"))
    assert custom[15] == 2.0 and custom[10] == 1.0 and custom[0] == 0.5
    assert Tiers.parse("0.5:1.5,-0.5:1.2,1.0") == Tiers()


@pytest.mark.parametrize("spec,message", [
    ("1.5,1.2", "expected 'Z1:VALUE1"),
    ("0:1.5", "expected 'Z1:VALUE1"),
    ("x:1.5,1.0", "expected 'Z1:VALUE1"),
    ("0:1.5,1:1.2,1.0", "strictly descending"),
    ("0:-1,1.0", ">= 0"),
])
def test_bad_tiers_are_refused(spec, message):
    with pytest.raises(SrddError, match=message):
        Tiers.parse(spec)


def test_targeted_is_one_inside_the_band():
    assert mults(Mode.TARGETED, REL, band=tuple(HIGH_ERROR_BAND)) == \
        [1.0 if i in HIGH_ERROR_BAND else 0.0 for i in range(28)]


def test_sqnr_uses_the_relative_rms_error_so_lower_sqnr_gets_more_noise():
    v = damage("sqnr_db", [14.0, 17.0, 20.0])
    assert [float(x) for x in v] == pytest.approx([10 ** -0.7, 10 ** -0.85, 10 ** -1.0])
    m = mults(Mode.PROPORTIONAL, [14.0, 17.0, 20.0], metric="sqnr_db")
    assert m[0] > m[1] > m[2]
    assert m[0] / m[2] == pytest.approx(10 ** 0.3, abs=0.02)  # 6 dB apart: twice the error amplitude
    published = mults(Mode.PROPORTIONAL, SQNR, metric="sqnr_db")
    assert max(range(28), key=lambda i: published[i]) == 26  # 16.0 dB, the lowest SQNR


def test_clip_bounds_and_explains():
    result = compute(Mode.PROPORTIONAL, damage("relative_error", REL), clip=parse_clip("0.9,1.1"))
    values = [float(r.multiplier) for r in result]
    assert min(values) == 0.9 and max(values) == 1.1
    assert result[15].why.endswith("clipped to [0.9, 1.1] -> 1.1")


@pytest.mark.parametrize("text", ["1", "a,b", "1.2,0.8", "-1,1", "nan,1"])
def test_bad_clip_is_refused(text):
    with pytest.raises(SrddError, match="--clip"):
        parse_clip(text)


def test_negative_inverse_multipliers_are_refused_unless_clipped():
    values = [0.1, 0.1, 0.1, 0.9]  # the last is 2.57x the mean -> 2 - 2.57 < 0
    with pytest.raises(SrddError, match=r"negative multipliers for layers \[3\]"):
        compute(Mode.INVERSE, damage("relative_error", values))
    assert float(compute(Mode.INVERSE, damage("relative_error", values), clip=parse_clip("0,2"))[3].multiplier) == 0


def test_all_zero_metric_is_refused():
    with pytest.raises(SrddError, match="zero for every layer"):
        compute(Mode.PROPORTIONAL, damage("relative_error", [0.0, 0.0]))


def test_published_high_error_band_is_10_to_19():
    values = {"relative_error": REL}
    zones = layer_zones(values, ZoneRule("relative_error", 0.5))
    assert high_error_band(zones) == tuple(HIGH_ERROR_BAND)
    assert [z.name for z in zones if z.kind == "depth"] == ["first", "early_mid", "middle", "late_mid", "last"]
    assert [z.layers for z in zones if z.name == "middle"] == [tuple(range(10, 20))]
    # layers 9 and 20 (1.02x the mean) are above the mean: the plain mean cut widens the band
    assert high_error_band(layer_zones(values, ZoneRule("relative_error", 0.0))) == tuple(range(9, 21))
