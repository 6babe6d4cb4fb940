"""Format configurations: one frozen, validated dataclass per format family.

A bound format (family + options) is hashable, so it keys the compiled-kernel
cache, and knows its block size and whether it needs a tensor-wide amax
(two-level NVFP4, per-tensor FP8) — the only thing that forces a second read
of the input.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

from srdd.formats.elements import E2M1, E4M3, ElementSpec


class ScaleMode(str, enum.Enum):
    """How an MX block's shared E8M0 exponent is chosen."""

    FLOOR = "floor"
    """OCP MX v1.0: e = floor(log2 amax) - emax_elem from the fp32 exponent bits.
    The scaled block max lies in [2^emax, 2^(emax+1)), so values above the largest
    element saturate."""

    RCEIL = "rceil"
    """NVIDIA hardware / cuBLAS: e = ceil(log2(amax / max_elem)), computed exactly;
    never saturates."""


class Family(str, enum.Enum):
    MX = "mx"
    NVFP4 = "nvfp4"
    INT = "int"
    PER_TENSOR = "per_tensor"
    IDENTITY = "identity"


@dataclass(frozen=True)
class MXFormat:
    """OCP MX: blocks of 32 along the last dim sharing a power-of-two (E8M0) scale."""

    name: str
    element: ElementSpec
    scale_mode: ScaleMode = ScaleMode.FLOOR
    family: Family = Family.MX
    block_size: int = 32
    uses_tensor_amax: bool = False

    def __post_init__(self) -> None:
        try:
            mode = self.scale_mode.lower() if isinstance(self.scale_mode, str) else self.scale_mode
            object.__setattr__(self, "scale_mode", ScaleMode(mode))  # case-insensitive, like format names
        except ValueError:
            raise ValueError(
                f"{self.name}: scale_mode must be one of {[m.value for m in ScaleMode]}, "
                f"got {self.scale_mode!r}"
            ) from None


@dataclass(frozen=True)
class NVFP4Format:
    """NVFP4: E2M1 elements in blocks of 16 with an E4M3 block scale.

    `per_tensor_scale=True` is torchao's two-level recipe (fp32 tensor scale
    amax_t/2688 under the E4M3 block scales); False is the same recipe with the
    tensor scale fixed to 1.
    """

    name: str = "nvfp4"
    per_tensor_scale: bool = True
    family: Family = Family.NVFP4
    block_size: int = 16
    element: ElementSpec = E2M1
    scale_element: ElementSpec = E4M3

    @property
    def uses_tensor_amax(self) -> bool:
        return self.per_tensor_scale


@dataclass(frozen=True)
class IntFormat:
    """Symmetric per-group integer: scale = amax / (2^(bits-1) - 0.5), range [-2^(bits-1), 2^(bits-1)-1]."""

    name: str
    bits: int = 4
    group_size: int = 32
    family: Family = Family.INT
    uses_tensor_amax: bool = False

    def __post_init__(self) -> None:
        if self.group_size < 1:
            raise ValueError(f"{self.name}: group_size must be >= 1, got {self.group_size}")

    @property
    def block_size(self) -> int:
        return self.group_size

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1

    @property
    def scale_divisor(self) -> float:
        return self.qmax + 0.5


@dataclass(frozen=True)
class PerTensorFormat:
    """One fp32 scale for the whole tensor: s = amax / max_elem, y = elem(x / s) * s."""

    name: str
    element: ElementSpec
    family: Family = Family.PER_TENSOR
    block_size: int | None = None
    uses_tensor_amax: bool = True


@dataclass(frozen=True)
class IdentityFormat:
    """Controls: `none` returns x exactly; `bf16` rounds through bfloat16 (identity for bf16 inputs)."""

    name: str
    through: torch.dtype | None = None
    family: Family = Family.IDENTITY
    block_size: int | None = None
    uses_tensor_amax: bool = False


QuantFormatConfig = MXFormat | NVFP4Format | IntFormat | PerTensorFormat | IdentityFormat
