import math

import numpy as np
import pytest
import torch

from srdd.formats import SQNR_CAP_DB, QuantStats, fake_quantize, quant_stats
from srdd.formats.quantize import quantize_blocks
from srdd.formats.registry import get_format

from . import reference as ref
from .conftest import edge_matrix


def _saturation_mask(x: torch.Tensor, fmt: str, **options) -> np.ndarray:
    _, sat = quantize_blocks(x.reshape(-1, x.shape[-1]), get_format(fmt, **options))
    return sat.reshape(sat.shape[0], -1)[:, : x.shape[-1]].numpy()


@pytest.mark.parametrize("fmt,options", [("mxfp4", {}), ("mxfp4", {"scale_mode": "rceil"}),
                                         ("nvfp4", {}), ("nvfp4", {"per_tensor_scale": False}),
                                         ("int4", {}), ("mxfp8_e4m3", {})])
def test_metrics_match_float64_reference(fmt, options):
    g = torch.Generator().manual_seed(11)
    x = torch.distributions.StudentT(3.0).sample((24, 96)) * 0.1
    x[2, :32] = 0.0
    q = fake_quantize(x, fmt, **options)
    want = ref.metrics(x.numpy(), q.numpy(), _saturation_mask(x, fmt, **options))
    got = quant_stats(x, fmt, **options).metrics()
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=1e-12, abs_tol=1e-15), key
    assert got["numel"] == x.numel() and got["nonzero"] == int((x != 0).sum())
    del g


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
