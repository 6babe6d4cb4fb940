"""Which implementation runs a format kernel: the C kernel, Inductor, or eager PyTorch.

On the CPU, the quantized formats run through the C kernel of `srdd.formats.native`
(one pass, bit-identical to eager). Everything else that is large enough goes
through `torch.compile`, which turns each (operation, format) pair into one
fused loop nest (C++/OpenMP on CPU via Inductor, Triton on GPU) that reads x
once and writes q once. Compiling costs seconds, so small tensors -- where
the eager path is already fast -- never trigger it, compiled functions are
cached per process with dynamic shapes (one compile per op/format/rank), and
Inductor's on-disk cache makes later processes cheap. All paths give
identical bits; `SRDD_FAKEQUANT_BACKEND` (or `set_backend`) picks one:
`auto` (default), `native` (the C kernel where it applies, else eager),
`compiled` (Inductor only) or `eager`.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch

from srdd.formats import native
from srdd.formats.specs import Family, QuantFormatConfig
from srdd.quiet import library_notices_silenced

BACKENDS = ("auto", "eager", "compiled", "native")
COMPILE_MIN_NUMEL = 1 << 16
"""Below this many elements `auto` stays eager: the kernel is cheap, a compile is not."""

RECOMPILE_LIMIT = 512

_backend = os.environ.get("SRDD_FAKEQUANT_BACKEND", "auto")
_compiled: dict[tuple[str, QuantFormatConfig], Callable[..., Any]] = {}
_compile_broken = False


def set_backend(name: str) -> None:
    """Choose `auto`, `native`, `compiled` or `eager` for this process (see the module docstring)."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown fake-quant backend {name!r}; choose one of {BACKENDS}")
    _backend = name


def get_backend() -> str:
    if _backend not in BACKENDS:
        raise ValueError(
            f"SRDD_FAKEQUANT_BACKEND={_backend!r} is not one of {BACKENDS}"
        )
    return _backend


def native_kernel(x: torch.Tensor, spec: QuantFormatConfig) -> ctypes.CDLL | None:
    """The C kernel library when it should compute `spec` for `x`, else None (use `run`)."""
    if get_backend() not in ("auto", "native") or not native.applies(x, spec):
        return None
    return native.library()


def _wants_compiled(x: torch.Tensor, spec: QuantFormatConfig) -> bool:
    mode = get_backend()
    # Identity controls are a cast at most: nothing to fuse, so never worth a compile.
    if mode in ("eager", "native") or _compile_broken or spec.family is Family.IDENTITY:
        return False
    return mode == "compiled" or x.numel() >= COMPILE_MIN_NUMEL or x.is_cuda


def compiled(fn: Callable[..., Any], spec: QuantFormatConfig) -> Callable[..., Any]:
    """The cached compiled version of `fn(*args, spec)` for 2-D [rows, K] inputs."""
    key = (fn.__qualname__, spec)
    if key not in _compiled:
        # Every (op, format) shares the code object of `bound`, and Dynamo counts
        # recompiles per code object: raise its limit to cover every format,
        # dtype and K a model uses, instead of silently falling back.
        dynamo_config = torch._dynamo.config
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
        dynamo_config.accumulated_recompile_limit = max(
            dynamo_config.accumulated_recompile_limit, 4 * RECOMPILE_LIMIT
        )

        def bound(*args: torch.Tensor) -> Any:
            return fn(*args, spec)

        # Not dynamic=True: that would also turn the format's integers (block size,
        # exponents) into symbols and de-vectorise the block loops. Rows are marked
        # dynamic per call instead; K stays static (a model has few distinct K).
        # emulate_precision_casts: keep x.to(bf16).to(fp32) as a real rounding; by
        # default Inductor drops such round trips, which would change the bits.
        _compiled[key] = torch.compile(
            bound, fullgraph=True, options={"emulate_precision_casts": True}
        )
        with library_notices_silenced():  # Inductor's import touches deprecated torch.jit APIs
            importlib.import_module("torch._inductor.compile_fx")
    return _compiled[key]


def run(fn: Callable[..., Any], spec: QuantFormatConfig, *args: torch.Tensor) -> Any:
    global _compile_broken
    if not _wants_compiled(args[0], spec):
        return fn(*args, spec)
    for arg in args:
        torch._dynamo.maybe_mark_dynamic(arg, 0)
    try:
        return compiled(fn, spec)(*args)
    except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to identical eager bits
        if get_backend() == "compiled":
            raise
        _compile_broken = True
        warnings.warn(
            f"torch.compile failed ({type(exc).__name__}: {exc}); srdd fake-quant falls back to "
            "the eager path (same results, slower). Set SRDD_FAKEQUANT_BACKEND=eager to skip compiling.",
            RuntimeWarning,
            stacklevel=3,
        )
        return fn(*args, spec)
