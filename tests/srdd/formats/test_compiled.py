"""The compiled (Inductor) path must give the eager path's bits exactly."""

import pytest
import torch

from srdd.formats import fake_quantize, quant_stats, set_backend

from .conftest import bits, edge_matrix

CASES = [("mxfp4", {}), ("mxfp4", {"scale_mode": "rceil"}), ("nvfp4", {}),
         ("nvfp4", {"per_tensor_scale": False}), ("int4", {}), ("fp8_e4m3", {})]


def _edge_tensor(dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(21)
    x = torch.randn(300, 256, generator=g)
    edges = edge_matrix()
    x[: edges.shape[0], :32] = edges
    if dtype is not torch.float32:
        x = x.clamp(-6e4, 6e4)
    return x.to(dtype)


def _both(fn, *args, **kwargs):
    set_backend("eager")
    eager = fn(*args, **kwargs)
    set_backend("compiled")
    return eager, fn(*args, **kwargs)


def test_mxfp4_compiled_round_trip_matches_eager():
    x = _edge_tensor(torch.float32)
    eager, compiled = _both(fake_quantize, x, "mxfp4")
    assert (bits(eager) == bits(compiled)).all()


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fmt,options", CASES)
def test_compiled_matches_eager(fmt, options, dtype):
    x = _edge_tensor(dtype)
    eager, compiled = _both(fake_quantize, x, fmt, **options)
    assert (bits(eager) == bits(compiled)).all()
    out = torch.empty_like(x)
    set_backend("compiled")
    fake_quantize(x, fmt, out=out, **options)
    assert (bits(out) == bits(eager)).all()
    se, sc = _both(quant_stats, x, fmt, **options)
    for key, value in se.to_dict().items():
        assert getattr(sc, key) == pytest.approx(value, rel=1e-12), key
