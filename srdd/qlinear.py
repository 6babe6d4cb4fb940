"""Fake-quantized linear layers (W4A4, W4A16, A4) with a straight-through estimator.

A targeted `nn.Linear` is converted in place to `QuantLinear` (its class is
swapped; parameters, names, hooks and state-dict keys stay as they were), so
PEFT, optimizers and checkpoints keep working. Quantization happens
functionally inside `forward` through `fake_quantize_ste`, never by writing
quantized values into `.weight`. Frozen weights are quantized once and cached
until their storage or version counter changes (noise injection, optimizer
steps on full fine-tuning); trainable weights go through the STE every call.
With SRDD_PACKED_WEIGHTS=1 an E2M1 format's cache (MXFP4, NVFP4 with fp32 GEMMs on
the CPU) is held packed, codes and block scales (srdd.formats.packed), and unpacked
for each GEMM: the same bits in a fifth of the memory, for a little time.

`LinearQuantConfig.matmul_dtype` lets the GEMM run in another precision than
the weights (bf16 matmuls on an fp32 policy): activations are fake-quantized in
their own dtype first, then cast; for the formats `bf16_exact` accepts that cast
is lossless, so under W4A4 the only rounding is the GEMM's own output rounding.
"""

from __future__ import annotations

import enum
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from srdd import file_pages
from srdd.errors import SrddError
from srdd.formats import fake_quantize, fake_quantize_ste, get_format
from srdd.formats.packed import PackedE2M1, pack
from srdd.formats.specs import Family
from srdd.memory import frozen_weights_packed


class QuantMode(str, enum.Enum):
    """What a quantized linear fake-quantizes."""

    W4A4 = "w4a4"
    """Weights and input activations (the published setup)."""
    W4A16 = "w4a16"
    """Weights only."""
    A4 = "a4"
    """Input activations only."""
    NONE = "none"
    """Nothing: the unquantized control."""

    @property
    def weights(self) -> bool:
        return self in (QuantMode.W4A4, QuantMode.W4A16)

    @property
    def activations(self) -> bool:
        return self in (QuantMode.W4A4, QuantMode.A4)


DEFAULT_EXCLUDE: tuple[str, ...] = ("lm_head", "embed_tokens")
MATMUL_DTYPES: tuple[str, ...] = ("float32", "bfloat16")

_BF16_MANTISSA_BITS = 7
_BF16_MIN_EXPONENT = -133  # smallest bf16 subnormal: 2^(-126 - 7)
_E8M0_MIN_EXPONENT = -127


def bf16_exact(fmt: str, options: dict | None = None) -> bool:
    """Whether every value `fmt` produces from fp32 or bf16 input is exactly representable in bfloat16.

    Then a bf16 GEMM on W4A4-quantized operands sees exactly the quantized values:
    casting them to bf16 loses nothing, and the GEMM's output rounding is the only
    one left. True for MX formats whose elements carry at most bf16's 7 mantissa
    bits and whose smallest value 2^(emin - mbits - 127) (smallest element times the
    smallest E8M0 scale) is not below bf16's smallest subnormal 2^-133: e2m1, e2m3,
    e3m2 (bf16 shares fp32's exponent range, so the top end always fits). Not for
    MXFP8 E4M3/E5M2 (their tiniest values underflow bf16), NVFP4 (an arbitrary fp32
    tensor scale multiplies every value), per-tensor FP8 or per-group INT4 (fp32
    scales). The `bf16` identity control rounds through bf16, so it qualifies.
    """
    spec = get_format(fmt, **(options or {}))
    if spec.family is Family.IDENTITY:
        return spec.through is torch.bfloat16
    if spec.family is not Family.MX:
        return False
    element = spec.element
    smallest = element.emin - element.mbits + _E8M0_MIN_EXPONENT
    return element.mbits <= _BF16_MANTISSA_BITS and smallest >= _BF16_MIN_EXPONENT


@dataclass(frozen=True)
class LinearQuantConfig:
    format: str = "mxfp4"
    mode: QuantMode = QuantMode.W4A4
    options: dict = field(default_factory=dict)
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    matmul_dtype: str | None = None
    """Precision of the quantized linears' GEMMs: None runs them in the weight's dtype; "bfloat16" on
    fp32 weights keeps fp32 weights, caches and outputs but multiplies in bf16 (exact inputs for the
    formats `bf16_exact` accepts under W4A4). Linears outside the quantized set are unaffected."""

    def __post_init__(self) -> None:
        if self.matmul_dtype is not None and self.matmul_dtype not in MATMUL_DTYPES:
            raise SrddError(f"quant: matmul_dtype must be one of {list(MATMUL_DTYPES)} or None (the weight's dtype), "
                            f"got {self.matmul_dtype!r}")
        try:
            object.__setattr__(self, "mode", QuantMode(self.mode))
        except ValueError:
            raise SrddError(f"quant.mode must be one of {[m.value for m in QuantMode]}, got {self.mode!r}") from None
        try:
            get_format(self.format, **self.options)
        except (ValueError, TypeError) as exc:
            raise SrddError(f"quant: {exc}") from None
        for pattern in self.exclude:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise SrddError(f"quant.exclude: bad regex {pattern!r}: {exc}") from None

    def matmul_torch_dtype(self, weight: torch.Tensor) -> torch.dtype:
        """The dtype the GEMM of a linear with this `weight` runs in."""
        return weight.dtype if self.matmul_dtype is None else getattr(torch, self.matmul_dtype)

    @property
    def label(self) -> str:
        """How an accuracy records the precision it was measured under, e.g. 'mxfp4/w4a4'."""
        return f"{self.format}/{self.mode.value}"


_REFRESH_LOCK = threading.Lock()
"""Held while a frozen weight's cache is recomputed: a second thread's forward must neither recompute it into
the buffer the first one's GEMM (or saved graph) reads, nor use it half written."""

_SERVED = object()
"""QuantLinear._wq_key while a weight other than the parameter is served (QuantLinear.serve)."""


class QuantLinear(nn.Linear):
    """nn.Linear whose forward fake-quantizes per its `LinearQuantConfig`."""

    quant: LinearQuantConfig
    quant_enabled: bool
    weight_quantizations: int

    @classmethod
    def convert(cls, linear: nn.Linear, config: LinearQuantConfig) -> QuantLinear:
        if isinstance(linear, QuantLinear):
            raise SrddError("this linear is already quantized; each linear is wrapped exactly once")
        if type(linear) is not nn.Linear:
            raise SrddError(f"only plain nn.Linear can be quantized, got {type(linear).__name__}")
        linear.__class__ = cls
        linear.quant = config
        linear.quant_enabled = True
        linear.weight_quantizations = 0
        linear._wq_quantized = None
        linear._wq_cache = None
        linear._wq_key = None
        return linear  # type: ignore[return-value]

    def drop_weight_cache(self) -> None:
        """Forget the cached quantized weight: its layer's weights are being released, or they were written
        through `.data` (PEFT's merge_adapter, for one), which bypasses the version counter the cache is
        keyed on."""
        self._wq_quantized = self._wq_cache = self._wq_key = None

    @property
    def cache_bytes(self) -> int:
        """Bytes its frozen weight's quantized values take (packed or fp32), 0 while nothing is cached."""
        cache = self._wq_cache
        if isinstance(cache, PackedE2M1):
            return cache.nbytes
        if cache is None or cache.data_ptr() == self.weight.data_ptr():  # the weight itself: nothing held
            return 0
        return cache.numel() * cache.element_size()

    @property
    def servable(self) -> bool:
        """Its weight is frozen (quantized once into a buffer, not on every call), so `serve` can stand in for it."""
        return not self.weight.requires_grad

    def serve(self, weight: torch.Tensor) -> None:
        """Multiply by Q(`weight`) instead of Q(self.weight) until `stop_serving`.

        Rollout noise on a frozen weight is written here rather than into the parameter: the
        parameter stays the clean weight, so the noise needs no second (master) copy of it, and
        the quantized buffer it would have been recomputed into anyway holds the noisy value.
        """
        if not self.servable:
            raise SrddError("a trainable weight is quantized on every call (straight-through); it cannot be served")
        if weight.shape != self.weight.shape:
            raise SrddError(f"served weight has shape {tuple(weight.shape)}, the layer's is {tuple(self.weight.shape)}")
        self._refresh_frozen(self.quant.matmul_torch_dtype(self.weight), weight.detach())
        self._wq_key = _SERVED

    def served_quantized(self) -> torch.Tensor | None:
        """Q(the served weight), as `serve` left it in the layer's buffer (unpacked where packed); None unless the
        layer serves a weight and quantizes weights. Its values are fake_quantize's of the served weight, in that
        weight's dtype or fp32 (packed), so reading them back equals quantizing the weight again, without the pass."""
        if self._wq_key is not _SERVED or not self.quant.mode.weights:
            return None
        if isinstance(self._wq_cache, PackedE2M1):
            return self._wq_cache.unpack()
        return self._wq_quantized

    def stop_serving(self) -> None:
        """Back to Q(self.weight), recomputed on the next call."""
        if self._wq_key is _SERVED:
            self._wq_key = None

    def _weight_key(self, dtype: torch.dtype) -> tuple:
        w = self.weight
        return (w.data_ptr(), w._version, w.dtype, w.device, dtype)

    def matmul_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """The weight the GEMM multiplies by: fake-quantized per the mode, in `dtype`.

        Trainable weights go through the STE and the cast every call, so gradients
        reach them. Frozen ones are computed once per weight value (storage, version
        counter, dtype) and cached (DESIGN.md §2); a packed one is unpacked into this
        thread's scratch buffer, which the next packed linear of the thread overwrites.
        """
        operand = self._gemm_operand(dtype)
        return operand.unpack(_scratch(operand)) if isinstance(operand, PackedE2M1) else operand

    def _gemm_operand(self, dtype: torch.dtype) -> torch.Tensor | PackedE2M1:
        """`matmul_weight`, with a packed frozen weight left packed."""
        if self._wq_key is _SERVED:
            return self._wq_cache
        mode = self.quant.mode
        if not mode.weights and dtype == self.weight.dtype:
            return self.weight
        if self.weight.requires_grad:
            weight = self.weight
            if mode.weights:
                self.weight_quantizations += 1
                weight = fake_quantize_ste(weight, self.quant.format, **self.quant.options)
            return weight.to(dtype)
        key = self._weight_key(dtype)
        if self._wq_key != key:
            with _REFRESH_LOCK:  # forwards in threads (side-by-side validation batches, update passes) refresh once
                if self._wq_key != key:
                    self._refresh_frozen(dtype)
                    self._wq_key = key
        return self._wq_cache

    def _refresh_frozen(self, dtype: torch.dtype, weight: torch.Tensor | None = None) -> None:
        """Recompute the cached weight: packed where asked for (SRDD_PACKED_WEIGHTS=1) and its format allows (E2M1
        codes and block scales, a fifth of fp32's bytes), else into the previous buffers where they still fit.

        Noise on linear weights rewrites every weight each step, so allocating fresh
        fp32 copies of all of them per step would churn through hundreds of MB. A graph
        that saved the old cached value for its backward and runs after the rewrite
        fails autograd's version check rather than using the new value silently (a
        packed value is never rewritten: such a graph keeps the one it saw).
        The GEMMs now read the cache, not the parameter, so a parameter that is still
        the untouched pages of a mapped weights file gives them back until it is read
        again (srdd.file_pages).
        """
        w = self.weight.detach() if weight is None else weight
        if self.quant.mode.weights:
            self.weight_quantizations += 1
        wanted = self.quant.mode.weights and dtype == w.dtype and frozen_weights_packed()
        packed = pack(w, self.quant.format, **self.quant.options) if wanted else None
        if packed is not None:
            self._wq_quantized, self._wq_cache = None, packed
        else:
            source = w
            if self.quant.mode.weights:
                self._wq_quantized = fake_quantize(w, self.quant.format, **self.quant.options,
                                                   out=_reusable(self._wq_quantized, w, w.dtype))
                source = self._wq_quantized
            if dtype == w.dtype:
                self._wq_cache = source
            else:
                buffer = _reusable(self._wq_cache, w, dtype)
                self._wq_cache = source.to(dtype) if buffer is None else buffer.copy_(source)
        if packed is not None or self._wq_cache.data_ptr() != self.weight.data_ptr():
            file_pages.release(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.quant.mode
        if not self.quant_enabled or mode is QuantMode.NONE:
            return F.linear(x, self.weight, self.bias)
        x_q = fake_quantize_ste(x, self.quant.format, **self.quant.options) if mode.activations else x
        dtype = self.quant.matmul_torch_dtype(self.weight)
        operand = self._gemm_operand(dtype)
        if not isinstance(operand, PackedE2M1):
            return self._linear(x_q, operand, dtype)
        weight = operand.unpack(_scratch(operand))
        if not torch.is_grad_enabled():
            return self._linear(x_q, weight, dtype)
        with _saved_packed(weight, operand):
            return self._linear(x_q, weight, dtype)

    def _linear(self, x: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if dtype == x.dtype:
            return F.linear(x, weight, self.bias)
        bias = None if self.bias is None else self.bias.to(dtype)
        return F.linear(x.to(dtype), weight, bias).to(x.dtype)


_SCRATCH = threading.local()


def _scratch(packed: PackedE2M1) -> torch.Tensor:
    """This thread's buffer for an unpacked weight, grown to the largest one: one weight-sized buffer per thread
    that runs forwards, instead of every weight unpacked at once."""
    numel = 2 * packed.codes.numel()
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.numel() < numel:
        buffer = _SCRATCH.buffer = torch.empty(numel, dtype=torch.float32)
    return buffer[:numel]


@contextmanager
def _saved_packed(weight: torch.Tensor, packed: PackedE2M1) -> Iterator[None]:
    """Inside the block, a graph that saves `weight` (a scratch buffer the next linear overwrites) or a view of it
    for its backward saves `packed` instead and unpacks it when the backward runs. Autograd's own operations
    still compute the gradient, so it is the bits of a graph that saved an fp32 copy, without one per linear
    alive from forward to backward."""
    storage = weight.untyped_storage().data_ptr()

    def save(tensor: torch.Tensor) -> object:
        if tensor.untyped_storage().data_ptr() != storage:
            return tensor
        return tensor.shape, tensor.stride(), tensor.storage_offset() - weight.storage_offset()

    def load(saved: object) -> torch.Tensor:
        if isinstance(saved, torch.Tensor):
            return saved
        shape, stride, offset = saved
        return packed.unpack().as_strided(shape, stride, offset)

    with torch.autograd.graph.saved_tensors_hooks(save, load):
        yield


def _reusable(buffer: torch.Tensor | None, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """`buffer` when it can hold `like` cast to `dtype` (same shape and device), else None."""
    if buffer is None or buffer.shape != like.shape or buffer.dtype != dtype or buffer.device != like.device:
        return None
    return buffer


def quantize_linears(model: nn.Module, config: LinearQuantConfig) -> list[str]:
    """Convert every plain nn.Linear not matching `config.exclude`; return their names.

    PEFT LoRA layers are covered naturally: their `base_layer` is a plain
    nn.Linear (quantized) while lora_A/lora_B are excluded here so adapters
    stay full precision. Raises if any linear is already quantized, so a model
    is never wrapped twice.
    """
    if any(isinstance(m, QuantLinear) for m in model.modules()):
        raise SrddError("model already has quantized linears; each linear is wrapped exactly once")
    if config.mode is QuantMode.NONE:
        return []
    patterns = [re.compile(p) for p in config.exclude] + [re.compile(r"(^|\.)lora_[AB](\.|$)")]
    names = []
    for name, module in model.named_modules():
        if type(module) is nn.Linear and not any(p.search(name) for p in patterns):
            QuantLinear.convert(module, config)
            names.append(name)
    return names


def restore_linears(model: nn.Module) -> None:
    """Turn every QuantLinear back into the plain nn.Linear it was (same parameters), dropping its caches."""
    for _, module in list(quantized_modules(model)):
        module.__class__ = nn.Linear
        for attr in ("quant", "quant_enabled", "weight_quantizations", "_wq_quantized", "_wq_cache", "_wq_key"):
            delattr(module, attr)


@contextmanager
def linears_quantized(model: nn.Module, config: LinearQuantConfig) -> Iterator[list[str]]:
    """`quantize_linears` for the duration of the block (a propagated scan), plain linears again after."""
    names = quantize_linears(model, config)
    try:
        yield names
    finally:
        restore_linears(model)


def count_by_kind(names: list[str]) -> str:
    """'q_proj 28, k_proj 28, ...' in first-seen order: what a 200-line module list says in one line.

    The kind is a name's last component, PEFT's `.base_layer` looked through.
    """
    counts: dict[str, int] = {}
    for name in names:
        parts = name.split(".")
        kind = parts[-2] if parts[-1] == "base_layer" and len(parts) > 1 else parts[-1]
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{kind} {n}" for kind, n in counts.items())


def quantized_modules(model: nn.Module) -> Iterator[tuple[str, QuantLinear]]:
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            yield name, module


@contextmanager
def quantization_disabled(model: nn.Module) -> Iterator[None]:
    """Run the model at full precision inside the block (e.g. a reference forward)."""
    mods = [m for _, m in quantized_modules(model)]
    previous = [m.quant_enabled for m in mods]
    for m in mods:
        m.quant_enabled = False
    try:
        yield
    finally:
        for m, p in zip(mods, previous):
            m.quant_enabled = p
