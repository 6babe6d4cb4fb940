"""The LoRA merged into the quantized base for a while, then the base restored bit for bit.

The deployed model is Q(W + B·A)·Q(x), not the trained Q(W)·Q(x) + B·A·x (DESIGN.md
§3 "Accuracy as it would be deployed"). PEFT's `merge_adapter` writes W + B·A into
each base weight through `.data`, which bypasses autograd's version counter, so
QuantLinear's cached Q(W) would go on serving the unmerged weight: every cache is
invalidated after the merge and after the restore. PEFT's `unmerge_adapter`
subtracts B·A again, which is not exact in floating point: the base weights are
copied back from a snapshot instead (PEFT still unmerges first, to keep its own
merged/unmerged bookkeeping right).
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


def _lora_bases(model: nn.Module) -> list[nn.Parameter]:
    from peft.tuners.lora import LoraLayer

    return [m.get_base_layer().weight for m in model.modules() if isinstance(m, LoraLayer)]


@contextmanager
def lora_merged(model: nn.Module) -> Iterator[None]:
    """Inside the block the model's LoRA adapters are merged into their (re-quantized) base weights.

    A model without `merge_adapter` (no PEFT adapters) runs unchanged.
    """
    if getattr(model, "merge_adapter", None) is None:
        yield
        return
    weights = _lora_bases(model)
    saved = [w.detach().clone() for w in weights]
    model.merge_adapter()
    invalidate_quantized_weights(model)
    try:
        yield
    finally:
        model.unmerge_adapter()
        with torch.no_grad():
            for w, clean in zip(weights, saved):
                w.copy_(clean)
        invalidate_quantized_weights(model)
