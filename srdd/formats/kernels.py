"""The quantize-dequantize math, one function per format family.

Each function takes fp32 blocks `xb` of shape [..., nblocks, block] (or the
whole fp32 tensor for per-tensor formats) and returns `(y, saturated)`: the
dequantized fp32 values and a bool mask of elements whose scaled magnitude
exceeded the largest element. They are written as plain tensor expressions so
that `torch.compile` fuses each into one loop nest, and the same code is the
eager reference path: compiled and eager results are bit-identical.
"""

from __future__ import annotations

import torch

from srdd.formats.elements import E2M1, E4M3, pow2_floor, round_normal, round_to_element
from srdd.formats.specs import IdentityFormat, IntFormat, MXFormat, NVFP4Format, PerTensorFormat, ScaleMode

NVFP4_TENSOR_DIVISOR = E2M1.max_value * E4M3.max_value  # 2688
NVFP4_SCALE_MIN = 2.0**E4M3.emin  # smallest normal E4M3, 2^-6


def _block_amax(xb: torch.Tensor) -> torch.Tensor:
    """Max |x| per block; NaN and Inf propagate, so they mark the block as poisoned."""
    return xb.abs().amax(dim=-1, keepdim=True)


def _poison(bad: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """NaN scale for bad blocks: q * NaN is NaN for every element, zeros included."""
    return torch.where(bad, torch.full_like(scale, float("nan")), scale)


def mx_block_scales(amax: torch.Tensor, fmt: MXFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-block (1/X, X) for the E8M0 scale X = 2^e, e clamped to [-127, 127]; X is NaN for NaN/Inf blocks.

    floor: X = 2^floor(log2 amax) / 2^emax_elem. rceil: one binade higher when
    amax exceeds max_elem * that (the exact form of ceil(log2(amax / max_elem))).
    Everything is a power of two, so each product is exact; 2^-127 is the
    subnormal floor of the E8M0 range.
    """
    elem = fmt.element
    p2 = pow2_floor(amax)
    scale = p2 * 2.0**-elem.emax
    if fmt.scale_mode is ScaleMode.RCEIL:
        scale = torch.where(amax > p2 * (elem.max_value * 2.0**-elem.emax), scale * 2.0, scale)
    scale = torch.clamp(scale, min=2.0**-127)
    return 1.0 / scale, _poison(~torch.isfinite(amax), scale)


def mx_blocks(xb: torch.Tensor, fmt: MXFormat) -> tuple[torch.Tensor, torch.Tensor]:
    inv_scale, scale = mx_block_scales(_block_amax(xb), fmt)
    v = xb * inv_scale
    y = round_to_element(v, fmt.element) * scale
    return y, v.abs() > fmt.element.max_value


def nvfp4_blocks(
    xb: torch.Tensor, fmt: NVFP4Format, tensor_amax: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    amax_b = _block_amax(xb)
    if fmt.per_tensor_scale:
        assert tensor_amax is not None
        pts = tensor_amax / NVFP4_TENSOR_DIVISOR
    else:
        pts = torch.ones((), dtype=torch.float32, device=xb.device)
    s8 = round_normal(torch.clamp((amax_b / 6.0) / pts, NVFP4_SCALE_MIN, E4M3.max_value), E4M3)
    r = (1.0 / pts) / s8
    bad = ~torch.isfinite(amax_b)
    if fmt.per_tensor_scale:
        bad = bad | ~torch.isfinite(pts)
    # A zero (or underflowed) tensor scale leaves nothing to scale: r = 0 keeps signed zeros.
    zero = pts == 0
    r = torch.where(zero, 0.0, r)
    scale = _poison(bad, torch.where(zero, 0.0, pts * s8))
    v = xb * r
    y = round_to_element(v, E2M1) * scale
    return y, v.abs() > E2M1.max_value


def int_blocks(xb: torch.Tensor, fmt: IntFormat) -> tuple[torch.Tensor, torch.Tensor]:
    amax = _block_amax(xb)
    scale = amax / fmt.scale_divisor
    # An all-zero group has scale 0: divide by 1 instead so its zeros (and signs) survive.
    v = xb / torch.where(scale == 0, 1.0, scale)
    r = torch.round(v)
    saturated = (r > fmt.qmax) | (r < -fmt.qmax - 1)
    y = torch.clamp(r, -fmt.qmax - 1, fmt.qmax) * _poison(~torch.isfinite(amax), scale)
    return y, saturated


def per_tensor(
    x: torch.Tensor, fmt: PerTensorFormat, tensor_amax: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    s = tensor_amax / fmt.element.max_value
    v = x / torch.where(s == 0, 1.0, s)
    y = round_to_element(v, fmt.element) * _poison(~torch.isfinite(s), s)
    return y, v.abs() > fmt.element.max_value


def identity(x: torch.Tensor, fmt: IdentityFormat) -> tuple[torch.Tensor, torch.Tensor]:
    y = x if fmt.through is None else x.to(fmt.through).to(torch.float32)
    return y, torch.zeros_like(x, dtype=torch.bool)


def tensor_amax(x: torch.Tensor) -> torch.Tensor:
    """Tensor-wide max |x| (NaN if any NaN, Inf if any Inf)."""
    return x.abs().amax()
