import numpy as np
import torch

from srdd.formats import fake_quantize

from . import reference as ref
from .conftest import bits, edge_matrix


def test_int4_bit_exact_and_in_range():
    x = edge_matrix()
    got = fake_quantize(x, "int4")
    np.testing.assert_array_equal(bits(got), bits(torch.from_numpy(ref.int4(x.numpy()))))
    finite = torch.isfinite(x).all(1)
    scale = x[finite].abs().amax(1, keepdim=True) / 7.5
    levels = (got[finite] / torch.where(scale == 0, 1.0, scale)).double()
    assert torch.allclose(levels, levels.round(), atol=1e-5)
    assert levels.round().min() >= -8 and levels.round().max() <= 7


def test_int4_group_size_option():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 128, generator=g)
    got = fake_quantize(x, "int4", group_size=128)
    np.testing.assert_array_equal(bits(got), bits(torch.from_numpy(ref.int4(x.numpy(), 128))))
    assert not torch.equal(got, fake_quantize(x, "int4"))


def test_fp8_per_tensor_bit_exact():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(16, 40, generator=g) * 3
    np.testing.assert_array_equal(bits(fake_quantize(x, "fp8_e4m3")),
                                  bits(torch.from_numpy(ref.fp8_per_tensor(x.numpy()))))
    x[0, 0] = float("nan")
    assert torch.isnan(fake_quantize(x, "fp8_e4m3")).all()


def test_identity_controls():
    x = torch.randn(8, 33)
    assert torch.equal(fake_quantize(x, "none"), x)
    assert torch.equal(fake_quantize(x, "bf16"), x.to(torch.bfloat16).float())
    xb = x.to(torch.bfloat16)
    assert torch.equal(fake_quantize(xb, "bf16"), xb)
