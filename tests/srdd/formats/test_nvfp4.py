import numpy as np
import pytest
import torch

from srdd.formats import fake_quantize

from . import reference as ref
from .conftest import bits, edge_matrix


@pytest.mark.parametrize("per_tensor_scale", [True, False])
def test_nvfp4_bit_exact_per_row_tensor(per_tensor_scale):
    # The tensor scale spans the whole tensor, so compare one finite "tensor" per edge row.
    for row in edge_matrix():
        x = row.reshape(2, 16)
        got = fake_quantize(x, "nvfp4", per_tensor_scale=per_tensor_scale)
        want = ref.nvfp4(x.numpy(), per_tensor_scale)
        np.testing.assert_array_equal(bits(got), bits(torch.from_numpy(want)), err_msg=str(row))


@pytest.mark.parametrize("per_tensor_scale", [True, False])
def test_nvfp4_bit_exact_random_heavy_tails(per_tensor_scale):
    g = torch.Generator().manual_seed(7)
    x = torch.distributions.StudentT(2.0).sample((8, 48)) * 0.05
    x[3, 5] = 90.0
    x[6, :16] = 0.0
    got = fake_quantize(x, "nvfp4", per_tensor_scale=per_tensor_scale)
    want = ref.nvfp4(x.numpy(), per_tensor_scale)
    np.testing.assert_array_equal(bits(got), bits(torch.from_numpy(want)))
    del g


def test_two_level_scale_rounds_block_scale_in_e4m3():
    # amax_t = 2688 -> pts = 1; a block with amax 6*1.3 gets s8 = e4m3(1.3) = 1.25.
    x = torch.zeros(2, 16)
    x[0, 0] = 2688.0
    x[1, 0] = 7.8
    x[1, 1] = 1.25 * 3
    q = fake_quantize(x, "nvfp4")
    assert q[1, 1].item() == 3.0 * 1.25
    assert q[0, 0].item() == 2688.0


def test_all_zero_tensor_stays_signed_zero():
    x = torch.zeros(1, 32)
    x[0, 4] = -0.0
    q = fake_quantize(x, "nvfp4")
    assert (q == 0).all() and torch.signbit(q[0, 4]) and not torch.signbit(q[0, 5])


def test_non_finite_anywhere_poisons_the_two_level_tensor():
    x = torch.ones(2, 32)
    x[1, 31] = float("inf")
    assert torch.isnan(fake_quantize(x, "nvfp4")).all()
    one_level = fake_quantize(x, "nvfp4", per_tensor_scale=False)
    assert torch.isnan(one_level[1, 16:]).all() and not torch.isnan(one_level[0]).any()
