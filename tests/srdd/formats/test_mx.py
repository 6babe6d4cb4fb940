import numpy as np
import pytest
import torch

from srdd.formats import fake_quantize, quant_stats

from . import reference as ref
from .conftest import bits, edge_matrix, extreme_rows, random_matrix

MX_ELEMENTS = {"mxfp4": "e2m1", "mxfp6_e2m3": "e2m3", "mxfp6_e3m2": "e3m2",
               "mxfp8_e4m3": "e4m3", "mxfp8_e5m2": "e5m2"}


@pytest.mark.parametrize("mode", ["floor", "rceil"])
@pytest.mark.parametrize("fmt", list(MX_ELEMENTS))
def test_mx_bit_exact_on_edge_cases(fmt, mode):
    x = edge_matrix()
    got = fake_quantize(x, fmt, scale_mode=mode)
    want = ref.mx(x.numpy(), MX_ELEMENTS[fmt], mode)
    np.testing.assert_array_equal(bits(got), bits(torch.from_numpy(want)))


def test_mxfp4_hand_vector_floor():
    # amax 4 -> floor(log2 4) - 2 = 0 -> X = 1: elements round on the bare E2M1 grid.
    x = torch.zeros(32)
    x[:8] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, -0.0, 4.0])
    q = fake_quantize(x, "mxfp4")
    assert q[:8].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, -0.0, 4.0]
    assert torch.signbit(q[6])
    # amax 7.9 -> X = 2^0 under floor: 7.9 saturates to 6; under rceil X = 2: 7.9/2 = 3.95 -> 4 -> 8.
    y = torch.zeros(32)
    y[0] = 7.9
    assert fake_quantize(y, "mxfp4")[0].item() == 6.0
    assert fake_quantize(y, "mxfp4", scale_mode="rceil")[0].item() == 8.0


def test_mxfp4_scale_exponent_at_block_max_boundaries():
    # floor: amax in [2^k, 2^(k+1)) -> X = 2^(k-2); one ulp below 2^k drops a binade.
    for k in (-100, -3, 0, 7, 100):
        x = torch.zeros(32)
        x[0] = 2.0**k
        x[1] = 0.75 * 2.0 ** (k - 2)  # tie 0.75 -> 1 on the grid of X = 2^(k-2)
        q = fake_quantize(x, "mxfp4")
        assert q[1].item() == 2.0 ** (k - 2)
        x[0] = torch.nextafter(torch.tensor(2.0**k), torch.tensor(0.0)).item()
        q = fake_quantize(x, "mxfp4")  # X = 2^(k-3): 0.75*2^(k-2) = 1.5 X exactly
        assert q[1].item() == 1.5 * 2.0 ** (k - 3)


def test_rceil_never_saturates_and_floor_does():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 32, generator=g)
    x[:, 0] = 7.5 * 2.0 ** torch.randint(2, 6, (64,), generator=g).float()  # always the block max
    assert quant_stats(x, "mxfp4", scale_mode="rceil").saturated == 0
    assert quant_stats(x, "mxfp4").saturated >= 64
    floor = fake_quantize(x, "mxfp4")
    assert torch.equal(floor[:, 0], 6.0 / 7.5 * x[:, 0])  # 7.5 X saturates to 6 X


def test_padding_when_k_is_not_a_multiple_of_the_block():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(5, 45, generator=g)
    got = fake_quantize(x, "mxfp4")
    padded = torch.nn.functional.pad(x, (0, 19))
    assert torch.equal(got, fake_quantize(padded, "mxfp4")[:, :45])
    np.testing.assert_array_equal(bits(got), bits(torch.from_numpy(ref.mx(x.numpy()))))


def test_nan_or_inf_poisons_only_its_block():
    x = torch.ones(2, 64)
    x[0, 3] = float("nan")
    x[1, 40] = float("inf")
    q = fake_quantize(x, "mxfp4")
    assert torch.isnan(q[0, :32]).all() and not torch.isnan(q[0, 32:]).any()
    assert torch.isnan(q[1, 32:]).all() and not torch.isnan(q[1, :32]).any()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_are_rne_casts_of_the_fp32_result(dtype):
    x = (edge_matrix()[:-2] * 1e-3).to(dtype)  # keep fp16 in range; finite rows only
    got = fake_quantize(x, "mxfp4")
    assert got.dtype == dtype
    want = torch.from_numpy(ref.mx(x.float().numpy())).to(dtype)
    assert torch.equal(got.float().nan_to_num(7.0), want.float().nan_to_num(7.0))


def test_shape_dtype_and_out_are_respected():
    x = torch.randn(2, 3, 64)
    out = torch.empty_like(x)
    r = fake_quantize(x, "mxfp4", out=out)
    assert r is out and torch.equal(out, fake_quantize(x, "mxfp4"))
    nc = torch.empty(64, 6).t().reshape(6, 64)[:, :64]
    assert fake_quantize(x.reshape(6, 64), "mxfp4", out=nc) is nc


@pytest.mark.parametrize("mode", ["floor", "rceil"])
@pytest.mark.parametrize("fmt", list(MX_ELEMENTS))
def test_mx_bit_exact_on_extreme_binades_and_random(fmt, mode):
    for x in (extreme_rows(), random_matrix(1)):
        got = fake_quantize(x, fmt, scale_mode=mode)
        want = ref.mx(x.numpy(), MX_ELEMENTS[fmt], mode)
        np.testing.assert_array_equal(bits(got), bits(torch.from_numpy(want)))


TIES, TIES_TO = ref.E2M1_TIES, ref.E2M1_TIES_TO


@pytest.mark.parametrize("mode", ["floor", "rceil"])
@pytest.mark.parametrize("k", [-127, -120, -3, 0, 5, 100, 125])
def test_mxfp4_ties_at_every_scale(k, mode):
    # Block max 6 * 2^k gives X = 2^k under both modes (floor: 2 + k - 2; rceil: ceil(log2 2^k)).
    x = torch.zeros(32)
    x[0] = 6.0 * 2.0**k
    x[1:8] = torch.tensor(TIES) * 2.0**k
    x[8:15] = -x[1:8]
    x[15] = -0.0
    q = fake_quantize(x, "mxfp4", scale_mode=mode)
    assert q[0].item() == 6.0 * 2.0**k
    assert q[1:8].tolist() == [t * 2.0**k for t in TIES_TO]
    assert q[8:15].tolist() == [-t * 2.0**k for t in TIES_TO]
    assert torch.signbit(q[8]) and torch.signbit(q[15]) and q[15] == 0
    assert (q[16:] == 0).all() and not torch.signbit(q[16:]).any()


def test_mxfp4_rceil_scale_hand_values():
    # rceil: e = ceil(log2(amax / 6)); amax = 6 * 2^k exactly keeps X = 2^k, one ulp more doubles it.
    x = torch.zeros(32)
    x[0] = 6.0
    x[1] = 1.5
    assert fake_quantize(x, "mxfp4", scale_mode="rceil")[:2].tolist() == [6.0, 1.5]  # X = 1
    x[0] = torch.nextafter(torch.tensor(6.0), torch.tensor(7.0)).item()
    # X = 2: 1.5 / 2 = 0.75 is a tie -> 1 -> 2; the block max 3.0000002 -> 3 -> 6.
    assert fake_quantize(x, "mxfp4", scale_mode="rceil")[:2].tolist() == [6.0, 2.0]
    # floor keeps X = 1 (floor(log2 6.0000005) - 2 = 0) and saturates the max to 6.
    assert fake_quantize(x, "mxfp4")[:2].tolist() == [6.0, 1.5]
    assert quant_stats(x, "mxfp4").saturated == 1
    assert quant_stats(x, "mxfp4", scale_mode="rceil").saturated == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", ["floor", "rceil"])
@pytest.mark.parametrize("fmt", list(MX_ELEMENTS))
def test_low_precision_inputs_bit_exact_every_mx_format(fmt, mode, dtype):
    x = torch.cat([edge_matrix(), random_matrix(2).reshape(-1, 32)])
    if dtype is torch.float16:
        x = x * 1e-3
        x[(x.abs() > 6e4) & x.isfinite()] = 6e4
    x = x.to(dtype)
    got = fake_quantize(x, fmt, scale_mode=mode)
    assert got.dtype == dtype
    want = torch.from_numpy(ref.mx(x.float().numpy(), MX_ELEMENTS[fmt], mode)).to(dtype)
    np.testing.assert_array_equal(bits(got), bits(want))
