"""Public entry points: fake_quantize, quant_stats, fake_quantize_ste.

Shapes are normalised here (last dim blocked, zero-padded to a whole block,
computed in fp32, cast back with round-to-nearest-even) so the family kernels
only ever see fp32 blocks. The same traced functions run eagerly or through
`srdd.formats.backend`'s compiled cache, and the quantized formats on the CPU through the
C kernel of `srdd.formats.native`; all give identical bits.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from srdd.formats import backend, kernels, native
from srdd.formats.registry import get_format
from srdd.formats.specs import (
    Family,
    IdentityFormat,
    IntFormat,
    MXFormat,
    NVFP4Format,
    PerTensorFormat,
    QuantFormatConfig,
)
from srdd.formats.stats import QuantStats

_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_input(x: Any) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"fake_quantize expects a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(
            f"fake_quantize supports float32, bfloat16 and float16 tensors, got {x.dtype}"
        )
    if x.dim() == 0:
        raise ValueError("fake_quantize needs at least 1 dimension (blocks run along the last dim)")


def _kernel_view(x: torch.Tensor, fmt: QuantFormatConfig) -> torch.Tensor:
    """The shape the kernels see: [rows, nblocks, block] when K is a whole number of blocks, else [rows, K].

    Blocking outside the compiled region lets the block reduction and the
    elementwise rounding (and the store into `out`) share one loop nest, so
    each block is read from memory once. Rows are dynamic, K static: one
    compile serves every batch and sequence length.
    """
    k = x.shape[-1]
    block = fmt.block_size
    if block is not None and k % block == 0:
        return x.reshape(-1, k // block, block)
    return x.reshape(-1, k)


def quantize_blocks(x: torch.Tensor, fmt: QuantFormatConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Dequantized fp32 values and saturation mask of `x` ([rows, K] or pre-blocked), as [rows, nblocks, block].

    Results stay in block shape so the per-block reduction and the elementwise
    rounding share one outer loop (Inductor's outer-loop fusion needs matching
    loop prefixes): each block is read from memory once. Per-tensor and identity
    formats use a single block of the whole row.
    """
    xf = x.to(torch.float32)
    if fmt.family is Family.IDENTITY:
        assert isinstance(fmt, IdentityFormat)
        y, sat = kernels.identity(xf, fmt)
        return y.unsqueeze(1), sat.unsqueeze(1)
    amax_t = kernels.tensor_amax(xf) if fmt.uses_tensor_amax else None
    if fmt.family is Family.PER_TENSOR:
        assert isinstance(fmt, PerTensorFormat) and amax_t is not None
        y, sat = kernels.per_tensor(xf, fmt, amax_t)
        return y.unsqueeze(1), sat.unsqueeze(1)
    if xf.dim() == 3:
        xb = xf
    else:
        pad = (-x.shape[-1]) % fmt.block_size
        xb = F.pad(xf, (0, pad)).view(xf.shape[0], -1, fmt.block_size)
    if isinstance(fmt, MXFormat):
        return kernels.mx_blocks(xb, fmt)
    if isinstance(fmt, NVFP4Format):
        return kernels.nvfp4_blocks(xb, fmt, amax_t)
    assert isinstance(fmt, IntFormat)
    return kernels.int_blocks(xb, fmt)


def _like_input(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Block-shaped result back to the kernel view of `x`, dropping any zero padding."""
    if t.shape == x.shape:
        return t
    t = t.reshape(t.shape[0], -1)
    return t[:, : x.shape[-1]]


def round_trip(x: torch.Tensor, fmt: QuantFormatConfig) -> torch.Tensor:
    return _like_input(quantize_blocks(x, fmt)[0].to(x.dtype), x)


def round_trip_into(x: torch.Tensor, out: torch.Tensor, fmt: QuantFormatConfig) -> None:
    out.copy_(round_trip(x, fmt))


def stats_vector(x: torch.Tensor, fmt: QuantFormatConfig) -> torch.Tensor:
    """float64 [nonzero, deadzone, saturated, nonfinite, Σx², Σx⁴, Σerr², Σ|err|/|x|, amax].

    q is compared in the caller's dtype (what fake_quantize would return).
    Every block format turns a block holding NaN/Inf into NaN, so "q is not
    finite" marks exactly the elements to count and leave out of the sums.
    Sums of x², err² and |err|/|x| accumulate in float64 (x² and the error are
    exact there); counts are per-block float32 sums of 0/1 (exact below 2^24),
    which vectorise far better than boolean integer sums. Each block is reduced
    in the loop nest that computes it, then the per-block partials are summed.
    """
    y, sat = quantize_blocks(x, fmt)
    xf = x.to(torch.float32)
    if xf.shape != y.shape:  # zero padding adds nothing to any sum or count
        xf = F.pad(xf, (0, y.shape[1] * y.shape[2] - x.shape[-1])).view(y.shape)
    q = y.to(x.dtype).to(torch.float32)
    valid = torch.isfinite(q)
    xv = torch.where(valid, xf, 0.0)
    qv = torch.where(valid, q, 0.0)
    nz = (xv != 0).to(torch.float32)
    one = torch.ones_like(xv)
    counts = torch.stack([
        nz.sum(-1),
        (nz * (qv == 0).to(torch.float32)).sum(-1),
        torch.where(valid & sat, one, 0.0).sum(-1),
        torch.where(valid, 0.0, one).sum(-1),
    ]).to(torch.float64)
    xd = xv.to(torch.float64)
    d = qv.to(torch.float64) - xd
    x2 = xd * xd
    rel = torch.where(xv != 0, d.abs() / torch.where(xv != 0, xd.abs(), 1.0), 0.0)
    sums = torch.stack([x2.sum(-1), (x2 * x2).sum(-1), (d * d).sum(-1), rel.sum(-1)])
    amax = xv.abs().amax(-1).amax().to(torch.float64)
    return torch.cat([counts.sum((1, 2)), sums.sum((1, 2)), amax.reshape(1)])


def fake_quantize(
    x: torch.Tensor, fmt: str, *, out: torch.Tensor | None = None, **options: Any
) -> torch.Tensor:
    """Quantize then dequantize `x` in format `fmt` (see `list_formats()`).

    Same shape and dtype as `x`; blocks run along the last dimension. With
    `out`, the result is written there (same shape, dtype and device) and
    `out` is returned. Not differentiable: use `fake_quantize_ste` in training.
    A tensor that requires grad (with grad enabled) is refused rather than
    silently detached, which would fail later with a generic autograd error.
    """
    _check_input(x)
    if x.requires_grad and torch.is_grad_enabled():
        raise ValueError("fake_quantize is not differentiable and would detach x from the autograd graph: use "
                         "fake_quantize_ste(x, fmt) for a straight-through gradient, or pass x.detach()")
    spec = get_format(fmt, **options)
    if out is not None:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
        if out.shape != x.shape or out.dtype != x.dtype or out.device != x.device:
            raise ValueError(
                f"out must match x: got shape {tuple(out.shape)} {out.dtype} on {out.device}, "
                f"expected {tuple(x.shape)} {x.dtype} on {x.device}"
            )
    with torch.no_grad():
        if x.numel() == 0:
            return out if out is not None else x.clone()
        return _fake_quantize(x, spec, out)


def _fake_quantize(x: torch.Tensor, spec: QuantFormatConfig, out: torch.Tensor | None = None) -> torch.Tensor:
    lib = backend.native_kernel(x, spec)
    if lib is not None:
        return native.round_trip(lib, x, spec, out)
    xk = _kernel_view(x, spec)
    if out is None:
        return backend.run(round_trip, spec, xk).view(x.shape)
    if out.is_contiguous():
        backend.run(round_trip_into, spec, xk, out.view(xk.shape))
    else:
        out.copy_(backend.run(round_trip, spec, xk).view(x.shape))
    return out


def quant_stats(x: torch.Tensor, fmt: str, **options: Any) -> QuantStats:
    """All DESIGN.md §3 sums for `x` under `fmt` in one fused pass, without keeping q."""
    _check_input(x)
    spec = get_format(fmt, **options)
    if x.numel() == 0:
        return QuantStats.empty()
    lib = backend.native_kernel(x, spec)
    if lib is not None:
        return QuantStats.from_vector(x.numel(), native.stats(lib, x.detach(), spec))
    with torch.no_grad():
        vec = backend.run(stats_vector, spec, _kernel_view(x, spec))
    return QuantStats.from_vector(x.numel(), vec.tolist())


class _STE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, spec: QuantFormatConfig) -> torch.Tensor:  # type: ignore[override]
        with torch.no_grad():
            return _fake_quantize(x, spec)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad, None


def fake_quantize_ste(x: torch.Tensor, fmt: str, **options: Any) -> torch.Tensor:
    """fake_quantize in the forward pass, identity gradient in the backward (straight-through)."""
    _check_input(x)
    spec = get_format(fmt, **options)
    if x.numel() == 0:
        return x.clone()
    return _STE.apply(x, spec)
