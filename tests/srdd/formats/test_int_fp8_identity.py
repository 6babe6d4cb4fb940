import numpy as np
import pytest
import torch

from srdd.formats import fake_quantize

from . import reference as ref
from .conftest import bits, edge_matrix, extreme_rows, random_matrix


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


def _same(got: torch.Tensor, want: np.ndarray) -> None:
    np.testing.assert_array_equal(bits(got), bits(torch.from_numpy(want).to(got.dtype)))


def test_int4_hand_vector_round_half_even_and_clamp():
    # amax 7.5 -> scale 1: levels are the rounded values, ties to even, range [-8, 7].
    x = torch.zeros(32)
    x[:10] = torch.tensor([7.5, 0.5, 1.5, 2.5, -0.5, -2.5, -7.5, 3.49, -0.0, 6.5])
    q = fake_quantize(x, "int4")
    assert q[:10].tolist() == [7.0, 0.0, 2.0, 2.0, -0.0, -2.0, -8.0, 3.0, -0.0, 6.0]
    assert torch.signbit(q[4]) and torch.signbit(q[8]) and not torch.signbit(q[10])
    # Other scales: amax 15 -> scale 2: 5 = 2.5 * 2 -> 2 * 2 = 4; 7 = 3.5 * 2 -> 4 * 2 = 8.
    y = torch.zeros(32)
    y[:3] = torch.tensor([15.0, 5.0, -7.0])
    assert fake_quantize(y, "int4")[:3].tolist() == [14.0, 4.0, -8.0]


@pytest.mark.parametrize("group", [16, 32, 64])
def test_int4_bit_exact_extreme_random_and_groups(group):
    for x in (extreme_rows(), random_matrix(5), edge_matrix()):
        _same(fake_quantize(x, "int4", group_size=group), ref.int4(x.numpy(), group))


def test_int4_non_finite_poisons_only_its_group_and_zero_groups_stay_signed():
    x = torch.ones(2, 64)
    x[0, 3] = float("nan")
    x[1, 40] = float("-inf")
    x[1, :32] = 0.0
    x[1, 7] = -0.0
    q = fake_quantize(x, "int4")
    assert torch.isnan(q[0, :32]).all() and torch.isfinite(q[0, 32:]).all()
    assert torch.isnan(q[1, 32:]).all() and (q[1, :32] == 0).all() and torch.signbit(q[1, 7])


def test_int4_padding_when_k_is_not_a_multiple_of_the_group():
    x = random_matrix(6)[:, :45]
    assert torch.equal(fake_quantize(x, "int4"),
                       fake_quantize(torch.nn.functional.pad(x, (0, 19)), "int4")[:, :45])
    _same(fake_quantize(x, "int4"), ref.int4(x.numpy()))


def test_fp8_per_tensor_hand_vector():
    # amax 448 -> s = 1: E4M3 ties to even (17 -> 16, 19 -> 20, 0.5 * 2^-9 -> 0), sign kept.
    x = torch.tensor([448.0, 17.0, 19.0, -17.0, 2.0**-10, -(2.0**-10), 3 * 2.0**-10, -0.0])
    q = fake_quantize(x, "fp8_e4m3")
    assert q.tolist() == [448.0, 16.0, 20.0, -16.0, 0.0, -0.0, 2 * 2.0**-9, -0.0]
    assert torch.signbit(q[5]) and torch.signbit(q[7])


def test_fp8_per_tensor_bit_exact_edge_tensors():
    for x in [random_matrix(7), extreme_rows(), *edge_matrix()[:-2], *extreme_rows()]:
        _same(fake_quantize(x, "fp8_e4m3"), ref.fp8_per_tensor(x.numpy()))


def test_fp8_per_tensor_zero_and_non_finite_tensors():
    z = torch.zeros(3, 32)
    z[1, 2] = -0.0
    q = fake_quantize(z, "fp8_e4m3")
    assert (q == 0).all() and torch.signbit(q[1, 2]) and not torch.signbit(q[1, 3])
    for bad in (float("inf"), float("-inf"), float("nan")):
        x = torch.randn(3, 32)
        x[2, 5] = bad
        assert torch.isnan(fake_quantize(x, "fp8_e4m3")).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fmt", ["int4", "fp8_e4m3"])
def test_int_fp8_low_precision_inputs_bit_exact(fmt, dtype):
    x = (random_matrix(8) * (1e-3 if dtype is torch.float16 else 1.0)).clamp(-6e4, 6e4).to(dtype)
    got = fake_quantize(x, fmt)
    assert got.dtype == dtype
    _same(got, ref.fake_quantize(x.float().numpy(), fmt))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_identity_controls_bit_exact_on_edge_values(dtype):
    x = torch.cat([edge_matrix(), extreme_rows()])
    if dtype is not torch.float32:
        x = x.clamp(-6e4, 6e4)  # NaN stays NaN
    x = x.to(dtype)
    none = fake_quantize(x, "none")
    np.testing.assert_array_equal(bits(none), bits(x))
    bf = fake_quantize(x, "bf16")
    assert bf.dtype == dtype
    _same(bf, ref.round_to_bf16(x.float().numpy()))
