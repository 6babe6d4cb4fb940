"""Formats by name, with the options each accepts and their types.

The registry refuses duplicate names and unknown options, so a typo in a
config (`scale-mode`, `per_tensor`) is an error rather than a silent default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from srdd.formats.elements import E2M1, E2M3, E3M2, E4M3, E5M2
from srdd.formats.specs import (
    IdentityFormat,
    IntFormat,
    MXFormat,
    NVFP4Format,
    PerTensorFormat,
    QuantFormatConfig,
)


@dataclass(frozen=True)
class FormatEntry:
    name: str
    description: str
    options: dict[str, type]
    build: Callable[..., QuantFormatConfig]


FORMATS: dict[str, FormatEntry] = {}


def register_format(entry: FormatEntry) -> None:
    if entry.name in FORMATS:
        raise ValueError(f"format {entry.name!r} is already registered")
    FORMATS[entry.name] = entry


def list_formats() -> list[str]:
    return list(FORMATS)


def _check_option(fmt: str, key: str, value: Any, expected: type) -> None:
    ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
    if not ok:
        raise TypeError(
            f"format {fmt!r}: option {key!r} must be {expected.__name__}, "
            f"got {type(value).__name__} {value!r}"
        )


def get_format(fmt: str, **options: Any) -> QuantFormatConfig:
    """Resolve a name plus options to a validated, hashable format config."""
    if not isinstance(fmt, str):
        raise TypeError(f"format name must be a str, got {type(fmt).__name__}")
    entry = FORMATS.get(fmt.lower())
    if entry is None:
        raise ValueError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    unknown = sorted(set(options) - set(entry.options))
    if unknown:
        valid = ", ".join(entry.options) or "none"
        raise ValueError(f"format {entry.name!r} has no option(s) {unknown}; valid options: {valid}")
    for key, value in options.items():
        _check_option(entry.name, key, value, entry.options[key])
    return entry.build(**options)


def _mx(name: str, element, description: str) -> FormatEntry:
    return FormatEntry(
        name, description, {"scale_mode": str},
        lambda **o: MXFormat(name, element, **o),
    )


for _entry in (
    _mx("mxfp4", E2M1, "OCP MX FP4 (E2M1), blocks of 32, E8M0 scale"),
    FormatEntry("nvfp4", "NVIDIA FP4 (E2M1), blocks of 16, E4M3 block scale (+fp32 tensor scale)",
                {"per_tensor_scale": bool}, lambda **o: NVFP4Format(**o)),
    _mx("mxfp6_e2m3", E2M3, "OCP MX FP6 (E2M3), blocks of 32"),
    _mx("mxfp6_e3m2", E3M2, "OCP MX FP6 (E3M2), blocks of 32"),
    _mx("mxfp8_e4m3", E4M3, "OCP MX FP8 (E4M3), blocks of 32"),
    _mx("mxfp8_e5m2", E5M2, "OCP MX FP8 (E5M2), blocks of 32"),
    FormatEntry("fp8_e4m3", "FP8 E4M3 with one fp32 scale per tensor", {},
                lambda: PerTensorFormat("fp8_e4m3", E4M3)),
    FormatEntry("int4", "symmetric INT4 per group (scale = amax/7.5, range [-8, 7])",
                {"group_size": int}, lambda **o: IntFormat("int4", **o)),
    FormatEntry("bf16", "round through bfloat16 (identity for bf16 inputs)", {},
                lambda: IdentityFormat("bf16", torch.bfloat16)),
    FormatEntry("none", "exact identity (control)", {}, lambda: IdentityFormat("none")),
):
    register_format(_entry)
