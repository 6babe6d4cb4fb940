import numpy as np
import pytest
import torch

from srdd.formats import fake_quantize

from . import reference as ref
from .conftest import bits, edge_matrix, extreme_rows, random_matrix


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
    with torch.random.fork_rng():
        torch.manual_seed(7)
        x = torch.distributions.StudentT(2.0).sample((8, 48)) * 0.05
    x[3, 5] = 90.0
    x[6, :16] = 0.0
    got = fake_quantize(x, "nvfp4", per_tensor_scale=per_tensor_scale)
    want = ref.nvfp4(x.numpy(), per_tensor_scale)
    np.testing.assert_array_equal(bits(got), bits(torch.from_numpy(want)))


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


TIES, TIES_TO = ref.E2M1_TIES, ref.E2M1_TIES_TO


def _check(x: torch.Tensor, per_tensor_scale: bool) -> None:
    got = fake_quantize(x, "nvfp4", per_tensor_scale=per_tensor_scale)
    want = ref.nvfp4(x.float().numpy(), per_tensor_scale)
    want = torch.from_numpy(want).to(x.dtype)
    np.testing.assert_array_equal(bits(got), bits(want))


@pytest.mark.parametrize("per_tensor_scale", [True, False])
def test_nvfp4_bit_exact_extreme_rows_each_as_a_tensor(per_tensor_scale):
    for row in extreme_rows():
        _check(row.reshape(2, 16), per_tensor_scale)


@pytest.mark.parametrize("per_tensor_scale", [True, False])
def test_nvfp4_bit_exact_whole_matrices(per_tensor_scale):
    # Many blocks under one tensor scale: the E4M3 block scale spans its clamp range [2^-6, 448].
    _check(random_matrix(3), per_tensor_scale)
    finite = edge_matrix()[:-2]
    _check(finite, per_tensor_scale)
    _check(torch.cat([finite, extreme_rows()[5:40]]), per_tensor_scale)
    if not per_tensor_scale:  # per-block only: NaN/Inf rows poison just their blocks
        _check(edge_matrix(), per_tensor_scale)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("per_tensor_scale", [True, False])
def test_nvfp4_low_precision_inputs_bit_exact(per_tensor_scale, dtype):
    x = random_matrix(4) * (1e-3 if dtype is torch.float16 else 1.0)
    _check(x.clamp(-6e4, 6e4).to(dtype), per_tensor_scale)
    for row in edge_matrix()[:-2]:
        _check((row * 1e-3).reshape(2, 16).to(dtype), per_tensor_scale)


@pytest.mark.parametrize("s8", [0.5, 1.0, 2.0, 0.015625, 448.0])
def test_nvfp4_one_level_ties_at_block_scales(s8):
    # One level: pts = 1; a block max of 6 * s8 (s8 on the E4M3 grid) gives scale s8, r = 1 / s8.
    x = torch.zeros(2, 16)
    x[0, 0] = 6.0 * s8
    x[0, 1:8] = torch.tensor(TIES) * s8
    x[0, 8:15] = -x[0, 1:8]
    x[0, 15] = -0.0
    q = fake_quantize(x, "nvfp4", per_tensor_scale=False)
    assert q[0, 0].item() == 6.0 * s8
    assert q[0, 1:8].tolist() == [t * s8 for t in TIES_TO]
    assert q[0, 8:15].tolist() == [-t * s8 for t in TIES_TO]
    assert torch.signbit(q[0, 15]) and torch.signbit(q[0, 8])
    assert (q[1] == 0).all()


@pytest.mark.parametrize("k", [-60, -4, 0, 3, 50])
def test_nvfp4_two_level_ties_at_tensor_scales(k):
    # amax_t = 2688 * 2^k -> pts = 2^k exactly; a block with max 6 * 2^k * 2 gets s8 = 2.
    x = torch.zeros(2, 16)
    x[0, 0] = 2688.0 * 2.0**k
    x[1, 0] = 12.0 * 2.0**k
    x[1, 1:8] = torch.tensor(TIES) * 2.0 ** (k + 1)
    x[1, 8:15] = -x[1, 1:8]
    q = fake_quantize(x, "nvfp4")
    assert q[0, 0].item() == x[0, 0].item()
    assert q[1, 0].item() == x[1, 0].item()
    assert q[1, 1:8].tolist() == [t * 2.0 ** (k + 1) for t in TIES_TO]
    assert q[1, 8:15].tolist() == [-t * 2.0 ** (k + 1) for t in TIES_TO]
    _check(x, True)


def test_nvfp4_block_scale_clamps():
    # One level: a block max above 6 * 448 takes s8 = 448 and saturates at 6 * 448 = 2688;
    # a block max below 6 * 2^-6 takes s8 = 2^-6 (the smallest normal E4M3).
    x = torch.zeros(2, 16)
    x[0, 0], x[0, 1] = 5000.0, -3000.0
    x[1, 0], x[1, 1] = 0.01, 0.003
    q = fake_quantize(x, "nvfp4", per_tensor_scale=False)
    assert q[0, :2].tolist() == [2688.0, -2688.0]
    assert q[1, :2].tolist() == [0.5 * 2.0**-6, 0.0]  # 0.01 * 64 = 0.64 -> 0.5; 0.192 -> 0
    _check(x, False)
    _check(x, True)


def test_zero_block_inside_a_nonzero_tensor_keeps_signed_zeros():
    x = torch.randn(2, 32)
    x[1, 16:] = 0.0
    x[1, 20] = -0.0
    for pts in (True, False):
        q = fake_quantize(x, "nvfp4", per_tensor_scale=pts)
        assert (q[1, 16:] == 0).all() and torch.signbit(q[1, 20]) and not torch.signbit(q[1, 21])
        _check(x, pts)


def test_nvfp4_padding_when_k_is_not_a_multiple_of_16():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(3, 37, generator=g)
    for pts in (True, False):
        padded = torch.nn.functional.pad(x, (0, 11))
        assert torch.equal(fake_quantize(x, "nvfp4", per_tensor_scale=pts),
                           fake_quantize(padded, "nvfp4", per_tensor_scale=pts)[:, :37])
        _check(x, pts)
