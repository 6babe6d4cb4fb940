"""srdd.formats.packed: E2M1 codes and block scales that unpack to fake_quantize's exact bits, on every build."""

import pytest
import torch

from srdd.formats import fake_quantize, native, set_backend
from srdd.formats.packed import pack

from .conftest import edge_matrix, extreme_rows, random_matrix
from .test_native import variant  # noqa: F401 - the fixture: every build of the kernel this CPU runs

E2M1_CASES = [("mxfp4", {}), ("mxfp4", {"scale_mode": "rceil"}), ("nvfp4", {}), ("nvfp4", {"per_tensor_scale": False})]


def _inputs() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    edges = torch.cat([edge_matrix(), extreme_rows()])
    edges = edges[torch.isfinite(edges).all(1)]  # a NaN/Inf has no code: refused below
    ordinary = edges[edges.abs().amax(1) < 2.0**100]  # signed zeros, subnormals, ties, saturation
    scaled = torch.randn(96, 576, generator=g) * torch.exp2(torch.randint(-30, 30, (96, 1), generator=g).float())
    signed_zeros = torch.zeros(4, 64)
    signed_zeros[::2] = -0.0
    tiny = torch.randn(4, 64, generator=g) * 1e-38
    tiny[:, ::7] = 0.0  # NVFP4's tensor scale subnormal: its multipliers infinite, and a zero times one NaN
    return [edges, ordinary, random_matrix()[:, :64], scaled, torch.randn(576, 1536, generator=g) * 0.02,
            signed_zeros, ordinary * 2.0**-100, tiny]


def _raw_bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


@pytest.mark.parametrize("fmt,options", E2M1_CASES)
def test_unpacked_values_are_fake_quantizes_bits(variant, fmt, options):  # noqa: F811
    for x in _inputs():
        expected = fake_quantize(x, fmt, **options)  # eager: the reference the kernel is held to
        set_backend("native")
        packed = pack(x, fmt, **options)
        set_backend("eager")
        if torch.isnan(expected).any():  # a zero times an infinite NVFP4 multiplier: NaN, which no code holds
            assert packed is None
            continue
        if packed is None:  # the vector path stops where a scale could make a value overflow: no weight's
            assert variant != "portable" and x.abs().max() >= 2.0**100
            continue
        assert packed.shape == x.shape
        assert torch.equal(_raw_bits(packed.unpack()), _raw_bits(expected))  # signed zeros and all
        into = torch.full((x.numel(),), float("nan"))
        assert torch.equal(_raw_bits(packed.unpack(into)), _raw_bits(expected))


def test_a_packed_weight_takes_a_fifth_of_fp32s_bytes():
    set_backend("native")
    x = torch.randn(576, 1536)
    assert pack(x, "nvfp4").nbytes == x.numel() * 3 // 4  # 4 bits + an fp32 scale per 16
    assert pack(x, "mxfp4").nbytes == x.numel() * 5 // 8  # 4 bits + an fp32 scale per 32


@pytest.mark.parametrize("x,fmt,options,why", [
    (torch.randn(4, 32).bfloat16(), "nvfp4", {}, "bf16 values round after the multiplication"),
    (torch.randn(4, 32), "mxfp6_e2m3", {}, "not E2M1"),
    (torch.randn(4, 32), "int4", {}, "not E2M1"),
    (torch.randn(4, 24), "nvfp4", {}, "no whole number of blocks"),
    (torch.tensor([[1.0, float("inf")] * 16]), "mxfp4", {}, "a block scale of NaN"),
    (torch.tensor([[1.0, float("nan")] * 8]), "nvfp4", {}, "a tensor scale of NaN"),
])
def test_what_no_code_holds_is_left_unpacked(x, fmt, options, why):
    set_backend("native")
    assert pack(x, fmt, **options) is None, why


def test_without_the_c_kernel_nothing_is_packed(monkeypatch):
    set_backend("native")
    monkeypatch.setattr(native, "library", lambda variant=None: None)
    assert pack(torch.randn(4, 32), "nvfp4") is None
    set_backend("eager")
    monkeypatch.undo()
    assert pack(torch.randn(4, 32), "nvfp4") is None  # the eager backend asks for no kernel


def test_unpack_refuses_a_buffer_of_the_wrong_size():
    set_backend("native")
    packed = pack(torch.randn(4, 32), "nvfp4")
    with pytest.raises(ValueError, match="128 elements"):
        packed.unpack(torch.empty(127))
