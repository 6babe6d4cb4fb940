"""Property-based checks (hypothesis) of the invariants every block format must hold."""

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from srdd.formats import fake_quantize
from srdd.formats.elements import E2M1

from . import reference as ref
from .conftest import bits

FORMATS = [("mxfp4", {}), ("mxfp4", {"scale_mode": "rceil"}), ("nvfp4", {}),
           ("nvfp4", {"per_tensor_scale": False}), ("int4", {}), ("mxfp8_e4m3", {})]
finite = st.floats(-2.0**100, 2.0**100, allow_nan=False, allow_infinity=False, width=32)
blocks = st.one_of(
    arrays("float32", st.tuples(st.integers(1, 3), st.just(32)), elements=finite),
    arrays("float32", st.tuples(st.integers(1, 3), st.just(32)),
           elements=st.floats(allow_nan=False, allow_infinity=False, width=32)),  # subnormal..FLT_MAX
)
fmt_choice = st.sampled_from(FORMATS)
GRID = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0}


MX_FORMATS = st.sampled_from([("mxfp4", {}), ("mxfp4", {"scale_mode": "rceil"}), ("mxfp8_e4m3", {})])


@settings(max_examples=60, deadline=None)
@given(blocks, MX_FORMATS)
def test_mx_idempotent(a, fmt):
    """Power-of-two scales make MX idempotent; NVFP4's fp32 scale products and INT4's
    amax/7.5 re-derive a different scale from q, so they are not (by recipe)."""
    x = torch.from_numpy(a)
    q = fake_quantize(x, fmt[0], **fmt[1])
    if not torch.isfinite(q).all():
        # Only rceil can do this: a block max >= 1.75 * 2^127 gets X = 2^126 and rounds to 4X = 2^128,
        # which is inf in fp32 (the dequantized value overflows; the MX encoding itself is fine).
        assert fmt[1].get("scale_mode") == "rceil" and x.abs().max() >= 1.75 * 2.0**127
        return
    assert torch.equal(fake_quantize(q, fmt[0], **fmt[1]), q)


SYMMETRIC = st.sampled_from([f for f in FORMATS if f[0] != "int4"])


@settings(max_examples=60, deadline=None)
@given(blocks, SYMMETRIC)
def test_sign_symmetric(a, fmt):
    """INT4 is excluded by design: its range [-8, 7] is asymmetric (3 -> 7s but -3 -> -8s)."""
    x = torch.from_numpy(a)
    assert (bits(fake_quantize(-x, fmt[0], **fmt[1])) == bits(-fake_quantize(x, fmt[0], **fmt[1]))).all()


@settings(max_examples=60, deadline=None)
@given(blocks, st.sampled_from(["floor", "rceil"]))
def test_mxfp4_outputs_are_grid_times_a_power_of_two(a, mode):
    x = torch.from_numpy(a)
    q = fake_quantize(x, "mxfp4", scale_mode=mode)
    for row_x, row_q in zip(x, q):
        amax = float(row_x.abs().max())
        if amax == 0:
            assert (row_q == 0).all()
            continue
        e = math.frexp(amax)[1] - 1 - E2M1.emax
        if mode == "rceil" and amax > 1.5 * 2.0 ** (e + 2):
            e += 1
        scale = 2.0 ** max(e, -127)
        assert math.log2(scale).is_integer()
        # rceil can pick X = 2^126 for a block max >= 1.75 * 2^127: element 4 then dequantizes to 2^128,
        # past FLT_MAX, which fp32 can only hold as inf. Every other value is exactly grid * X.
        finite = {abs(float(v)) / scale for v in row_q if math.isfinite(v)}
        assert finite <= GRID
        assert all(math.isfinite(v) or abs(v) == math.inf and 4 * scale >= 2.0**128 for v in row_q.tolist())


@settings(max_examples=60, deadline=None)
@given(blocks, fmt_choice)
def test_monotone_within_a_block(a, fmt):
    """Checked on 16-element slices, which lie inside one block of every format tested."""
    x = torch.from_numpy(a)
    q = fake_quantize(x, fmt[0], **fmt[1]).reshape(-1, 16)  # 16 divides every block size here
    x = x.reshape(-1, 16)
    order = torch.argsort(x, dim=-1)
    sorted_q = torch.gather(q, -1, order)
    ok = ~torch.isnan(q).any(-1)  # NVFP4 of a tensor whose 1/pts overflows: zeros become NaN by recipe
    assert (sorted_q[ok, 1:] >= sorted_q[ok, :-1]).all()


ALL_FORMATS = FORMATS + [("mxfp4", {"scale_mode": "floor"}), ("mxfp6_e2m3", {}), ("mxfp6_e3m2", {"scale_mode": "rceil"}),
                         ("mxfp8_e5m2", {}), ("mxfp8_e4m3", {"scale_mode": "rceil"}), ("fp8_e4m3", {}),
                         ("int4", {"group_size": 16}), ("bf16", {}), ("none", {})]
any_f32 = st.floats(allow_nan=False, allow_infinity=False, width=32)  # subnormals to FLT_MAX
# A block of values spread over a few binades around a random one, with exact zeros and -0.
binade = st.integers(-149, 127)
spread = st.one_of(st.just(0.0), st.just(-0.0), st.floats(-1.0, 1.0, width=32), st.sampled_from(
    [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0, -0.25, -1.75, -5.0, 7.0, 7.5, 8.0]))
K = st.sampled_from([16, 32, 40, 64])


@st.composite
def tensors(draw):
    k = draw(K)
    rows = draw(st.integers(1, 2))
    if draw(st.booleans()):
        a = draw(arrays("float32", (rows, k), elements=any_f32))
    else:
        e = draw(binade)
        a = draw(arrays("float32", (rows, k), elements=spread))
        with np.errstate(over="ignore", under="ignore"):
            a = (a.astype(np.float64) * 2.0**e).astype(np.float32)
        a[~np.isfinite(a)] = np.float32(3.0e38)
    return torch.from_numpy(a)


@settings(max_examples=400, deadline=None)
@given(tensors(), st.sampled_from(ALL_FORMATS))
def test_bit_exact_against_reference(x, fmt):
    got = fake_quantize(x, fmt[0], **fmt[1])
    want = ref.fake_quantize(x.numpy(), fmt[0], **fmt[1])
    np.testing.assert_array_equal(bits(got), bits(torch.from_numpy(want)))


MX_GRIDS = {name: {g for g, _ in ref.GRIDS[elem]} for name, elem in ref.MX_ELEMENT.items()}


@settings(max_examples=60, deadline=None)
@given(tensors(), st.sampled_from(sorted(MX_GRIDS)), st.sampled_from(["floor", "rceil"]))
def test_every_mx_output_is_grid_times_a_power_of_two_scale(x, fmt, mode):
    q = fake_quantize(x, fmt, scale_mode=mode).double()
    elem = ref.MX_ELEMENT[fmt]
    xp = torch.nn.functional.pad(x, (0, (-x.shape[-1]) % 32)).reshape(-1, 32)
    qp = torch.nn.functional.pad(q, (0, (-q.shape[-1]) % 32)).reshape(-1, 32)
    for bx, bq in zip(xp, qp):
        amax = float(bx.abs().max())
        # the E8M0 scale from the spec alone: floor takes the exponent field, rceil the exact ceiling
        e = ref.mx_scale_exponent(amax, elem, mode)
        assert -127 <= e <= 127
        scale = 2.0**e
        # rceil can round a block max within 1.75*2^127 of FLT_MAX up to 2^128: Inf in fp32, by recipe
        finite = [v for v in bq if math.isfinite(float(v))]
        assert len(finite) == len(bq) or (mode == "rceil" and amax >= 1.75 * 2.0**127)
        assert {abs(float(v)) / scale for v in finite} <= MX_GRIDS[fmt], (amax, e)


@settings(max_examples=60, deadline=None)
@given(tensors(), st.booleans())
def test_nvfp4_outputs_are_e2m1_grid_times_pts_times_an_e4m3_block_scale(x, per_tensor_scale):
    q = fake_quantize(x, "nvfp4", per_tensor_scale=per_tensor_scale)
    e4m3 = {g for g, _ in ref.GRIDS["e4m3"]}
    f32 = np.float32
    pts = f32(x.abs().max()) / f32(2688.0) if per_tensor_scale else f32(1.0)
    xp = torch.nn.functional.pad(x, (0, (-x.shape[-1]) % 16)).reshape(-1, 16).numpy()
    qp = torch.nn.functional.pad(q, (0, (-q.shape[-1]) % 16)).reshape(-1, 16).numpy()
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for bx, bq in zip(xp, qp):
            if np.isnan(bq).any():  # only where 1/pts overflows (zeros times inf), by recipe
                assert 0 < pts < 2.0**-126
                continue
            if pts == 0:
                assert (bq == 0).all()
                continue
            s8 = f32(ref.round_element(float(np.clip((f32(np.abs(bx).max()) / f32(6)) / pts,
                                                     f32(2.0**-6), f32(448))), "e4m3"))
            assert s8 in e4m3 and 2.0**-6 <= s8 <= 448
            total = pts * s8
            assert {abs(float(v)) for v in bq} <= {float(f32(g) * total) for g in GRID}


@settings(max_examples=60, deadline=None)
@given(tensors())
def test_int4_outputs_are_integer_levels_times_the_group_scale(x):
    q = fake_quantize(x, "int4").double()
    xp = torch.nn.functional.pad(x, (0, (-x.shape[-1]) % 32)).reshape(-1, 32)
    qp = torch.nn.functional.pad(q, (0, (-q.shape[-1]) % 32)).reshape(-1, 32)
    for bx, bq in zip(xp, qp):
        scale = float(np.float32(bx.abs().max()) / np.float32(7.5))
        if scale == 0:
            assert (bq == 0).all()
            continue
        s32 = np.float32(scale)
        with np.errstate(over="ignore"):  # near fp32's max, -8 x scale overflows: -inf joins the set, unused
            allowed = {float(np.float32(level) * s32) for level in range(-8, 8)}
        assert {float(v) for v in bq} <= allowed
