"""Fake-quantized E2M1 weights (MXFP4, NVFP4) held packed: a 4-bit code per element and an fp32 scale per block.

A frozen weight's quantized values are what its GEMMs read for a whole run, and in
fp32 they are as large as the weight itself (405 MiB for SmolLM2's linears). They are
E2M1 values times one fp32 scale per block, so the C kernel stores exactly that (0.75
bytes a weight under NVFP4, 0.625 under MXFP4) and `unpack` multiplies them out again
when a GEMM needs them: the round trip ends in the same fp32 multiplication, so the
values are its bits, and the GEMM gives the same result as on the fp32 copy.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

import torch

from srdd.formats import native
from srdd.formats.backend import native_kernel
from srdd.formats.elements import E2M1
from srdd.formats.registry import get_format
from srdd.formats.specs import QuantFormatConfig


@dataclass(frozen=True)
class PackedE2M1:
    """fake_quantize(x) of an fp32 CPU tensor x, packed: `unpack()` gives its values, bit for bit."""

    codes: torch.Tensor
    """uint8, two E2M1 codes a byte (the even element in the low nibble; sign bit 3, magnitude rank bits 0-2)."""
    scales: torch.Tensor
    """fp32, one per block of `block` elements."""
    shape: torch.Size
    block: int
    kernel: ctypes.CDLL = field(repr=False, compare=False)
    """The C kernel build that packed it and unpacks it: looked up once, not again at every GEMM."""

    @property
    def nbytes(self) -> int:
        return self.codes.numel() + 4 * self.scales.numel()

    def unpack(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """The fp32 values, written into `out` (contiguous, `shape`'s element count) when given.

        On the calling thread alone: a weight unpacks in about a GEMM's hundredth (120 us for 576 x 1536 here), and
        the GEMMs that need it often run on one thread beside another busy core (decode steps, update passes side
        by side), where a second thread's wake-up costs more than it saves."""
        numel = self.codes.numel() * 2
        if out is None:
            out = torch.empty(self.shape, dtype=torch.float32)
        elif out.numel() != numel or out.dtype != torch.float32 or not out.is_contiguous():
            raise ValueError(f"unpack needs a contiguous fp32 tensor of {numel} elements, "
                             f"got {out.dtype} {tuple(out.shape)}")
        rc = self.kernel.srdd_unpack_e2m1(self.codes.data_ptr(), self.scales.data_ptr(), out.data_ptr(),
                                          numel // self.block, self.block, 1)
        if rc != 0:
            raise RuntimeError(f"srdd_unpack_e2m1 rejected its arguments (code {rc})")
        return out.view(self.shape)


def _kernel(x: torch.Tensor, spec: QuantFormatConfig) -> ctypes.CDLL | None:
    """The C kernel build when it can pack fake_quantize(x, spec): E2M1 elements, fp32 on the CPU, the kernel in use."""
    if x.dtype != torch.float32 or getattr(spec, "element", None) != E2M1:
        return None
    return native_kernel(x, spec)


def pack(x: torch.Tensor, fmt: str, **options) -> PackedE2M1 | None:
    """fake_quantize(x, fmt, **options) packed, or None where it cannot be (no C kernel for it, elements other than
    E2M1, a dtype other than fp32, and a result with a NaN in it, which no code holds)."""
    spec = get_format(fmt, **options)
    kernel = _kernel(x, spec)
    if kernel is None:
        return None
    x = x.detach().contiguous()
    block = native.kernel_block(spec)
    codes = torch.empty(x.numel() // 2, dtype=torch.uint8)
    scales = torch.empty(x.numel() // block, dtype=torch.float32)
    threads = torch.get_num_threads() if x.numel() >= native.PARALLEL_MIN_NUMEL else 1
    rc = kernel.srdd_pack_e2m1(x.data_ptr(), codes.data_ptr(), scales.data_ptr(), scales.numel(),
                               native.format_code(spec), threads)
    if rc < 0:
        raise RuntimeError(f"srdd_pack_e2m1 rejected its arguments (code {rc})")
    return None if rc else PackedE2M1(codes, scales, x.shape, block, kernel)
