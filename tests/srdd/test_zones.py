"""srdd.zones: the one zone definition scan, show and calibrate share."""

import pytest

from srdd.errors import SrddError
from srdd.zones import ZoneRule, depth_zones, high_error_bands, layer_zones, zone_of


def test_depth_zones_scale_the_published_split():
    assert [(z.name, z.label) for z in depth_zones(28)] == [
        ("first", "0-3"), ("early_mid", "4-9"), ("middle", "10-19"), ("late_mid", "20-25"), ("last", "26-27")]
    assert [z.name for z in depth_zones(3)] == ["early_mid", "middle", "late_mid"]


def test_bands_are_named_by_rank_of_their_mean_not_by_size():
    # a wide mild band (layers 1-5) and a narrow severe one (8-9): the severe one is high_error
    values = [0.1, 0.35, 0.35, 0.35, 0.35, 0.35, 0.1, 0.1, 0.6, 0.6]
    bands = high_error_bands(values, ZoneRule("relative_error", 0.0))
    assert [(b.name, b.layers) for b in bands] == [("high_error", (8, 9)), ("high_error_2", (1, 2, 3, 4, 5))]
    assert all(b.kind == "data" for b in bands)
    # mean + 0.5 std = 0.41: only the severe band stays; single layers never form a band
    assert [b.layers for b in high_error_bands(values, ZoneRule("relative_error", 0.5))] == [(8, 9)]
    assert high_error_bands([0.1, 0.9, 0.1, 0.1], ZoneRule("relative_error", 0.0)) == []


def test_a_db_metric_bands_the_low_values():
    sqnr = [20.0, 20.0, 12.0, 12.5, 20.0, 20.0]
    rule = ZoneRule("sqnr_db", 0.5)
    assert rule.damage([20.0])[0] == pytest.approx(0.1)  # 10^(-20/20): the relative RMS error
    assert [b.layers for b in high_error_bands(sqnr, rule)] == [(2, 3)]
    zones = layer_zones({"sqnr_db": sqnr}, rule)
    assert zone_of(3, zones, "data") == "high_error" and zone_of(0, zones, "data") is None
    assert "10^(-SQNR/20) > mean + 0.5 std" in rule.describe()
    assert "not the SQNR" not in rule.describe()


def test_bands_by_another_metric_say_why_they_may_hold_good_sqnr_layers():
    text = ZoneRule("relative_error").describe()
    assert "bands follow relative_error, not the SQNR the worst layers are ranked by" in text
    assert "--zone-metric sqnr_db" in text


def test_rule_refuses_a_negative_band_std():
    with pytest.raises(SrddError, match="--band-std"):
        ZoneRule("relative_error", -1.0)
