"""The LoRA merged into the quantized base for a while, then the base restored bit for bit.

The deployed model is Q(W + B·A)·Q(x), not the trained Q(W)·Q(x) + B·A·x (DESIGN.md
§3 "Accuracy as it would be deployed"). Two ways to get it:

- `lora_served`, for a forward (the merged validation): each base layer serves W + B·A,
  computed exactly as PEFT's merge computes it, to its quantized-weight buffer
  (QuantLinear.serve) while the adapters are disabled. The parameters are never written,
  so nothing needs restoring and no copy of the weights is made.
- `lora_merged`, where the merged weights must be the parameters (a scan reads them).
  PEFT's `merge_adapter` writes W + B·A into each base weight through `.data`, which
  bypasses autograd's version counter, so QuantLinear's cached Q(W) would go on serving the
  unmerged weight: every cache is invalidated after the merge and after the restore. PEFT's
  `unmerge_adapter` subtracts B·A again, which is not exact in floating point: the base
  weights are copied back from a snapshot instead (PEFT still unmerges first, to keep its
  own merged/unmerged bookkeeping right). Adapters whose B is all zeros (before training)
  merge to the base exactly, so then nothing is merged or copied; `restore=False` (the
  run's last scan) skips the snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from srdd.qlinear import QuantLinear


def invalidate_quantized_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, QuantLinear):
            module.drop_weight_cache()


def _lora_layers(model: nn.Module) -> list:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def _adapters_are_zero(model: nn.Module) -> bool:
    """Every adapter's B is all zeros (PEFT's initialisation): W + B·A is W, bit for bit."""
    return all(not torch.any(b.weight) for layer in _lora_layers(model) for b in layer.lora_B.values())


@contextmanager
def lora_merged(model: nn.Module, *, restore: bool = True) -> Iterator[None]:
    """Inside the block the model's LoRA adapters are merged into their (re-quantized) base weights.

    A model without `merge_adapter` (no PEFT adapters) runs unchanged. With `restore=False`
    the merge outlives the block (for a model nobody runs again).
    """
    if getattr(model, "merge_adapter", None) is None or _adapters_are_zero(model):
        yield
        return
    weights = [layer.get_base_layer().weight for layer in _lora_layers(model)]
    saved = [w.detach().clone() for w in weights] if restore else None
    model.merge_adapter()
    invalidate_quantized_weights(model)
    try:
        yield
    finally:
        if saved is not None:
            model.unmerge_adapter()
            with torch.no_grad():
                for w, clean in zip(weights, saved):
                    w.copy_(clean)
            invalidate_quantized_weights(model)


def _servable(layer) -> bool:
    """A plain LoRA (no DoRA-style variant, no LoRA bias, one adapter) on a frozen quantized linear: its merge
    is exactly W + get_delta_weight, which can be served instead of written."""
    base = layer.get_base_layer()
    return (isinstance(base, QuantLinear) and base.servable and len(layer.active_adapters) == 1
            and not getattr(layer, "lora_variant", {}) and not any(getattr(layer, "lora_bias", {}).values()))


@contextmanager
def lora_served(model: nn.Module) -> Iterator[None]:
    """`lora_merged` for forwards only: the merged weights go to the quantized-weight buffers, not the
    parameters (see the module docstring); falls back to `lora_merged` where a layer cannot be served."""
    layers = _lora_layers(model)
    if not layers or getattr(model, "disable_adapter", None) is None or not all(map(_servable, layers)):
        with lora_merged(model):
            yield
        return
    try:
        with torch.no_grad():
            for layer in layers:
                base = layer.get_base_layer()
                # PEFT's merge is `weight.data += delta`: the sum rounded to the weight's dtype
                base.serve((base.weight + layer.get_delta_weight(layer.active_adapters[0])).to(base.weight.dtype))
        with model.disable_adapter():
            yield
    finally:
        for layer in layers:
            layer.get_base_layer().stop_serving()
