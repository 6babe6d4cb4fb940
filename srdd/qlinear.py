"""Fake-quantized linear layers (W4A4, W4A16, A4) with a straight-through estimator.

A targeted `nn.Linear` is converted in place to `QuantLinear` (its class is
swapped; parameters, names, hooks and state-dict keys stay as they were), so
PEFT, optimizers and checkpoints keep working. Quantization happens
functionally inside `forward` through `fake_quantize_ste`, never by writing
quantized values into `.weight`. Frozen weights are quantized once and cached
until their storage or version counter changes (noise injection, optimizer
steps on full fine-tuning); trainable weights go through the STE every call.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from srdd.errors import SrddError
from srdd.formats import fake_quantize_ste, get_format


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


@dataclass(frozen=True)
class LinearQuantConfig:
    format: str = "mxfp4"
    mode: QuantMode = QuantMode.W4A4
    options: dict = field(default_factory=dict)
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE

    def __post_init__(self) -> None:
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

    @property
    def label(self) -> str:
        """How an accuracy records the precision it was measured under, e.g. 'mxfp4/w4a4'."""
        return f"{self.format}/{self.mode.value}"


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
        linear._wq_cache = None
        linear._wq_key = None
        return linear  # type: ignore[return-value]

    def _weight_key(self) -> tuple:
        w = self.weight
        return (w.data_ptr(), w._version, w.dtype, w.device)

    def quantized_weight(self) -> torch.Tensor:
        if self.weight.requires_grad:
            self.weight_quantizations += 1
            return fake_quantize_ste(self.weight, self.quant.format, **self.quant.options)
        key = self._weight_key()
        if self._wq_cache is None or self._wq_key != key:
            self.weight_quantizations += 1
            self._wq_cache = fake_quantize_ste(self.weight, self.quant.format, **self.quant.options)
            self._wq_key = key
        return self._wq_cache

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.quant.mode
        if not self.quant_enabled or mode is QuantMode.NONE:
            return F.linear(x, self.weight, self.bias)
        if mode.activations:
            x = fake_quantize_ste(x, self.quant.format, **self.quant.options)
        weight = self.quantized_weight() if mode.weights else self.weight
        return F.linear(x, weight, self.bias)


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
