import math

import numpy as np
import pytest
import torch

from srdd.formats import SQNR_CAP_DB, QuantStats, fake_quantize, quant_stats
from srdd.formats.quantize import quantize_blocks
from srdd.formats.registry import get_format

from . import reference as ref
from .conftest import edge_matrix, extreme_rows, random_matrix


def _saturation_mask(x: torch.Tensor, fmt: str, **options) -> np.ndarray:
    _, sat = quantize_blocks(x.reshape(-1, x.shape[-1]), get_format(fmt, **options))
    return sat.reshape(sat.shape[0], -1)[:, : x.shape[-1]].numpy()


@pytest.mark.parametrize("fmt,options", [("mxfp4", {}), ("mxfp4", {"scale_mode": "rceil"}),
                                         ("nvfp4", {}), ("nvfp4", {"per_tensor_scale": False}),
                                         ("int4", {}), ("mxfp8_e4m3", {})])
def test_metrics_match_float64_reference(fmt, options):
    with torch.random.fork_rng():
        torch.manual_seed(11)
        x = torch.distributions.StudentT(3.0).sample((24, 96)) * 0.1
    x[2, :32] = 0.0
    q = fake_quantize(x, fmt, **options)
    want = ref.metrics(x.numpy(), q.numpy(), ref.saturation(x.numpy(), fmt, **options))
    assert (_saturation_mask(x, fmt, **options) == ref.saturation(x.numpy(), fmt, **options)).all()
    got = quant_stats(x, fmt, **options).metrics()
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=1e-12, abs_tol=1e-15), key
    assert got["numel"] == x.numel() and got["nonzero"] == int((x != 0).sum())


def test_deadzone_and_relative_error_hand_example():
    x = torch.zeros(32)
    x[0], x[1], x[2] = 4.0, 0.2, 1.0   # X = 1: 0.2 -> 0 (deadzone), 1.0 exact
    s = quant_stats(x, "mxfp4")
    assert s.nonzero == 3 and s.deadzone == 1
    m = s.metrics()
    assert m["deadzone_ratio"] == pytest.approx(1 / 3)
    assert m["relative_error"] == pytest.approx(1 / 3)  # (0 + 1 + 0) / 3
    assert m["sqnr_db"] == pytest.approx(10 * math.log10((16 + 0.04 + 1) / 0.04))


def test_merge_equals_stats_of_concatenation():
    g = torch.Generator().manual_seed(12)
    a, b, c = (torch.randn(n, 64, generator=g) for n in (3, 5, 7))
    whole = quant_stats(torch.cat([a, b, c]), "mxfp4")
    merged = quant_stats(a, "mxfp4") + quant_stats(b, "mxfp4") + quant_stats(c, "mxfp4")
    left = (quant_stats(a, "mxfp4") + quant_stats(b, "mxfp4")) + quant_stats(c, "mxfp4")
    right = quant_stats(a, "mxfp4") + (quant_stats(b, "mxfp4") + quant_stats(c, "mxfp4"))
    for key, value in left.to_dict().items():  # counts exactly, float sums up to rounding
        assert getattr(right, key) == pytest.approx(value, rel=1e-14), key
    for key, value in whole.metrics().items():
        assert merged.metrics()[key] == pytest.approx(value, rel=1e-12), key
    assert QuantStats.from_dict(merged.to_dict()) == merged
    assert QuantStats.empty() + merged == merged


def test_all_zero_input_gives_capped_finite_metrics():
    m = quant_stats(torch.zeros(4, 32), "mxfp4").metrics()
    assert m["sqnr_db"] == SQNR_CAP_DB and m["sqnr_capped"] is True
    assert all(math.isfinite(v) for v in m.values() if isinstance(v, float))


def test_non_finite_elements_are_counted_and_excluded():
    x = edge_matrix()
    s = quant_stats(x, "mxfp4")
    poisoned = int((~torch.isfinite(fake_quantize(x, "mxfp4"))).sum())
    assert s.nonfinite == poisoned == 64  # the NaN row and the Inf row, whole blocks
    assert all(math.isfinite(v) for v in s.metrics().values() if isinstance(v, float))


def test_stats_of_bf16_input_compare_the_bf16_result():
    x = torch.randn(8, 64).to(torch.bfloat16)
    q = fake_quantize(x, "nvfp4")
    err2 = float(((q.double() - x.double()) ** 2).sum())
    assert quant_stats(x, "nvfp4").sum_err2 == pytest.approx(err2, rel=1e-12)


STAT_FORMATS = [("mxfp4", {}), ("mxfp4", {"scale_mode": "rceil"}), ("nvfp4", {}),
                ("nvfp4", {"per_tensor_scale": False}), ("int4", {}), ("int4", {"group_size": 16}),
                ("mxfp6_e2m3", {}), ("mxfp6_e3m2", {"scale_mode": "rceil"}), ("mxfp8_e4m3", {}),
                ("mxfp8_e5m2", {}), ("fp8_e4m3", {}), ("bf16", {}), ("none", {})]


def _reference_stats(x: torch.Tensor, fmt: str, **options) -> dict:
    """Metrics from the independent reference's q and saturation mask, all in float64."""
    xn = x.float().numpy()
    q = torch.from_numpy(ref.fake_quantize(xn, fmt, **options)).to(x.dtype).float().numpy()
    return ref.metrics(xn, q, ref.saturation(xn, fmt, **options))


def _assert_metrics(got: dict, want: dict) -> None:
    for key, value in want.items():
        if key == "sqnr_db" and not math.isfinite(value):
            assert got["sqnr_capped"] and got[key] == SQNR_CAP_DB
            continue
        assert math.isclose(got[key], value, rel_tol=1e-12, abs_tol=1e-300), (key, got[key], value)


@pytest.mark.parametrize("fmt,options", STAT_FORMATS)
def test_metrics_match_independent_reference_on_random_and_edge_data(fmt, options):
    cases = [random_matrix(13), torch.cat([edge_matrix(), extreme_rows()[10:30]])]
    if fmt in ("nvfp4", "fp8_e4m3"):  # tensor-wide scale: keep one NaN row out of every other row's way
        cases[1] = torch.cat([edge_matrix()[:-2], extreme_rows()[10:30]])
        cases.append(edge_matrix()[-2:])  # the NaN and the -Inf row: everything non-finite
    for x in cases:
        got = quant_stats(x, fmt, **options)
        _assert_metrics(got.metrics(), _reference_stats(x, fmt, **options))
        q = fake_quantize(x, fmt, **options)
        assert got.nonfinite == int((~torch.isfinite(q)).sum())
        assert got.numel == x.numel()
        assert got.nonzero == int(((x != 0) & torch.isfinite(q)).sum())
        assert all(math.isfinite(v) for v in got.metrics().values() if isinstance(v, float))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fmt,options", STAT_FORMATS[:5] + [("fp8_e4m3", {})])
def test_metrics_of_low_precision_inputs(fmt, options, dtype):
    x = (random_matrix(14) * 1e-3).clamp(-6e4, 6e4).to(dtype)
    _assert_metrics(quant_stats(x, fmt, **options).metrics(), _reference_stats(x, fmt, **options))


@pytest.mark.parametrize("fmt,options", STAT_FORMATS)
def test_all_zero_input_never_gives_nan_for_any_format(fmt, options):
    z = torch.zeros(3, 48)
    z[1, 5] = -0.0
    s = quant_stats(z, fmt, **options)
    m = s.metrics()
    assert s.nonzero == s.deadzone == s.saturated == s.nonfinite == 0
    assert m["sqnr_db"] == SQNR_CAP_DB and m["sqnr_capped"] is True
    assert m["relative_error"] == m["deadzone_ratio"] == m["saturation_ratio"] == m["mse"] == 0.0
    assert all(math.isfinite(v) for v in m.values() if isinstance(v, float))


@pytest.mark.parametrize("fmt,options", [("mxfp4", {}), ("nvfp4", {"per_tensor_scale": False}), ("int4", {})])
def test_stats_merge_is_associative_and_equals_concatenation_for_block_formats(fmt, options):
    g = torch.Generator().manual_seed(15)
    parts = [torch.randn(n, 64, generator=g) * 2.0**k for n, k in ((2, -3), (4, 0), (3, 9))]
    parts[1][0, 7] = float("nan")  # a poisoned block is excluded the same way in the parts and the whole
    whole = quant_stats(torch.cat(parts), fmt, **options)
    a, b, c = (quant_stats(p, fmt, **options) for p in parts)
    left, right = (a + b) + c, a + (b + c)
    for key, value in whole.to_dict().items():
        assert getattr(left, key) == pytest.approx(value, rel=1e-12), key
        assert getattr(right, key) == pytest.approx(value, rel=1e-12), key
    for key in ("numel", "nonzero", "deadzone", "saturated", "nonfinite", "amax"):
        assert getattr(left, key) == getattr(whole, key) == getattr(right, key), key
    _assert_metrics(whole.metrics(), left.metrics() | {"sqnr_capped": False})


def test_sqnr_cap_when_quantization_is_exact():
    x = torch.zeros(2, 32)
    x[0, :4] = torch.tensor([4.0, 1.0, -0.5, 6.0])  # on the grid of X = 1
    m = quant_stats(x, "mxfp4").metrics()
    assert m["sqnr_db"] == SQNR_CAP_DB and m["sqnr_capped"] is True and m["mse"] == 0.0
    assert quant_stats(x, "none").metrics()["sqnr_capped"] is True
