"""On a GPU, fake_quantize and quant_stats must give the CPU eager path's bits.

The CPU eager path is proven bit-exact against the reference in the other
modules; a GPU runs the same formulas through eager CUDA kernels or through
Inductor's Triton kernels (the `auto` choice there). Skipped without CUDA, so
the suite passes on CPU-only machines; on a GPU machine run
`python -m pytest -q tests/srdd/formats/test_cuda.py`.
"""

import pytest
import torch

from srdd.formats import fake_quantize, quant_stats, set_backend

from .conftest import TENSOR_SCALED, assert_same_stats, bits, planted_tensor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CASES = [("mxfp4", {}), ("mxfp4", {"scale_mode": "rceil"}), ("nvfp4", {}),
         ("nvfp4", {"per_tensor_scale": False}), ("mxfp8_e4m3", {}), ("int4", {}), ("fp8_e4m3", {})]


@pytest.mark.parametrize("backend", ["eager", "auto"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fmt,options", CASES)
def test_gpu_matches_cpu_eager(fmt, options, dtype, backend):
    x = planted_tensor(dtype, fmt, options)
    expected, expected_stats = fake_quantize(x, fmt, **options), quant_stats(x, fmt, **options)  # CPU, eager
    set_backend(backend)
    xg = x.cuda()
    got = fake_quantize(xg, fmt, **options)
    assert got.is_cuda and got.dtype == dtype
    assert (bits(got.cpu()) == bits(expected)).all()
    out = torch.empty_like(xg)
    assert fake_quantize(xg, fmt, out=out, **options) is out
    assert (bits(out.cpu()) == bits(expected)).all()
    assert_same_stats(expected_stats, quant_stats(xg, fmt, **options))
    if fmt in TENSOR_SCALED and options.get("per_tensor_scale", True):
        xg[7, 9] = float("inf")
        assert torch.isnan(fake_quantize(xg, fmt, **options)).all()
