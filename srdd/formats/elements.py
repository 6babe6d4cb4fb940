"""Element (per-value) floating-point grids and exact round-to-nearest-even onto them.

All MX/NV formats share one rounding rule: scale a value into the element
range, round to the nearest representable element with ties to even, saturate
at the largest element and keep the sign (-0 stays -0). Doing it with
exponent bits and `torch.round` (which is round-half-even) keeps every step
exact in fp32: multiplying by a power of two is exact, so the only rounding is
the one we ask for.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_EXP_MASK = 0xFF
_MANT_BITS = 23
_BIAS = 127


@dataclass(frozen=True)
class ElementSpec:
    """A sign-magnitude minifloat: `mbits` mantissa bits, smallest normal exponent `emin`.

    `emax` is the exponent of the largest element and `max_value` that element;
    formats without infinities (E2M1, E2M3, E3M2, E4M3 "fn") reach past the IEEE
    pattern, which is why both are given explicitly.
    """

    name: str
    mbits: int
    emin: int
    emax: int
    max_value: float

    def __post_init__(self) -> None:
        if not (0 <= self.mbits <= 10):
            raise ValueError(f"{self.name}: mbits must be in [0, 10]")
        if self.emin > self.emax:
            raise ValueError(f"{self.name}: emin > emax")
        mant = self.max_value / 2.0**self.emax
        if not (1.0 <= mant < 2.0):
            raise ValueError(f"{self.name}: max_value {self.max_value} is not in [2^emax, 2^(emax+1))")

    @property
    def max_mantissa_bits(self) -> int:
        """fp32 mantissa field of `max_value`; rceil compares block maxima against it."""
        frac = self.max_value / 2.0**self.emax - 1.0
        return int(round(frac * (1 << _MANT_BITS)))


E2M1 = ElementSpec("e2m1", mbits=1, emin=0, emax=2, max_value=6.0)
E2M3 = ElementSpec("e2m3", mbits=3, emin=0, emax=2, max_value=7.5)
E3M2 = ElementSpec("e3m2", mbits=2, emin=-2, emax=4, max_value=28.0)
E4M3 = ElementSpec("e4m3", mbits=3, emin=-6, emax=8, max_value=448.0)
E5M2 = ElementSpec("e5m2", mbits=2, emin=-14, emax=15, max_value=57344.0)


def pow2_floor(a: torch.Tensor) -> torch.Tensor:
    """2^floor(log2 a) for normal fp32 `a >= 0`, from the exponent bits (0 for zero/subnormal, inf for inf/NaN).

    One bit cast per value; exponents never come from a float log2.
    """
    return (a.view(torch.int32) & (_EXP_MASK << _MANT_BITS)).view(torch.float32)


def round_normal(s: torch.Tensor, spec: ElementSpec) -> torch.Tensor:
    """Round positive fp32 values already inside `spec`'s normal range [2^emin, max_value].

    Block scales (NVFP4's E4M3) are clamped into that range first, so the
    quantum is simply 2^(floor(log2 s) - mbits); both scalings are exact.
    """
    p2 = pow2_floor(s)
    return torch.round(s * ((2.0**spec.mbits) / p2)) * (p2 * 2.0**-spec.mbits)


def biased_exponent(bits: torch.Tensor) -> torch.Tensor:
    """Biased fp32 exponent field of int32 bit patterns (0 for zero and subnormals)."""
    return (bits >> _MANT_BITS) & _EXP_MASK


def pow2(exponent: torch.Tensor) -> torch.Tensor:
    """2**exponent as fp32 for integer exponents in [-126, 127], built from bits (exact)."""
    return ((exponent + _BIAS) << _MANT_BITS).view(torch.float32)


def _round_e2m1(v: torch.Tensor) -> torch.Tensor:
    """E2M1 with float ops only: pick the binade's quantum by two compares, then RNE-round.

    The quantum is 0.5 below 2, 1 below 4 and 2 above; scaling by its inverse
    and back is exact, `torch.round` is half-to-even, and rounding the signed
    value keeps -0 and the sign symmetric. Selects vectorise far better than
    the bit casts of the generic path.
    """
    a = v.abs()
    inv_quantum = torch.where(a < 2.0, 2.0, torch.where(a < 4.0, 1.0, 0.5))
    quantum = torch.where(a < 2.0, 0.5, torch.where(a < 4.0, 1.0, 2.0))
    return torch.clamp(torch.round(v * inv_quantum) * quantum, -E2M1.max_value, E2M1.max_value)


def round_to_element(v: torch.Tensor, spec: ElementSpec) -> torch.Tensor:
    """Round fp32 `v` to the nearest element of `spec` (ties to even), saturating, sign kept.

    The quantum of a value with exponent E is 2**(max(E, emin) - mbits); the
    value is divided by it (exact), rounded half-to-even, multiplied back
    (exact) and clamped to `max_value`. NaN maps to NaN except on the E2M1
    fast path, whose callers poison non-finite blocks through the scale.
    """
    if spec == E2M1:
        return _round_e2m1(v)
    return _round_by_quantum(v, spec)


def _round_by_quantum(v: torch.Tensor, spec: ElementSpec) -> torch.Tensor:
    a = v.abs()
    e = biased_exponent(a.view(torch.int32)) - _BIAS
    k = torch.clamp(e, min=spec.emin, max=126) - spec.mbits
    qa = torch.round(a * pow2(-k)) * pow2(k)
    qa = torch.clamp(qa, max=spec.max_value)
    return torch.copysign(qa, v)
