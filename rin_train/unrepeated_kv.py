"""Grouped-query attention's repeated keys and values, saved for the backward as the tensors they repeat.

Why: transformers' SDPA attention on the CPU, given an attention mask, copies each layer's keys and values once
per query head of their group (`repeat_kv`: 3 copies for SmolLM2's 9 query and 3 key/value heads), and SDPA
saves those copies for its backward. In a demo run's update, two passes side by side, they were 138 MiB of the
tensors alive at the peak (heaptrack). A copy depends on the tensor it repeats and nothing else, so while SDPA
saves its inputs, a repeated tensor is saved as that tensor (a third of the size) and repeated again when the
backward unpacks it: the same values, so autograd's own SDPA backward computes the same bits. The repeated
tensor must not have been written in place in between: its version is checked at unpack, and a change raises
rather than being trusted.

Only where nothing else has hooked saved tensors (activation checkpointing does), and only with gradients on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_SOURCE = "_srdd_repeats"
"""Attribute of a repeat_kv result: (the tensor it repeats, its version then, the repeat count)."""


def _repeat_kv(repeat: Callable[[torch.Tensor, int], torch.Tensor]) -> Callable[[torch.Tensor, int], torch.Tensor]:
    def repeated(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
        out = repeat(hidden_states, n_rep)
        if out is not hidden_states and torch.is_grad_enabled():
            setattr(out, _SOURCE, (hidden_states, hidden_states._version, n_rep))
        return out

    repeated.__wrapped_repeat_kv__ = repeat
    return repeated


def _other_hooks() -> bool:
    """Whether saved tensors are hooked already (or this torch cannot say: then they are left alone too)."""
    top = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return top is None or top(False) is not None


def _saving_unrepeated(attention: Callable, repeat: Callable[[torch.Tensor, int], torch.Tensor]) -> Callable:
    def pack(t: torch.Tensor):
        source = getattr(t, _SOURCE, None)
        return t if source is None else source

    def unpack(saved):
        if isinstance(saved, torch.Tensor):
            return saved
        tensor, version, n_rep = saved
        if tensor._version != version:
            raise RuntimeError("a key or value tensor that grouped-query attention repeated was written in place "
                               "between the forward and the backward (rin_train.unrepeated_kv)")
        return repeat(tensor, n_rep)

    def sdpa(module, query, key, value, *args, **kwargs):
        if not torch.is_grad_enabled() or _other_hooks():
            return attention(module, query, key, value, *args, **kwargs)
        with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
            return attention(module, query, key, value, *args, **kwargs)

    sdpa.__wrapped_sdpa__ = attention
    return sdpa


def install() -> None:
    """Put the saving repeat in transformers' SDPA attention (once, for every model of the process)."""
    from transformers.integrations import sdpa_attention
    from transformers.modeling_utils import AttentionInterface

    if getattr(sdpa_attention.repeat_kv, "__wrapped_repeat_kv__", None) is not None:
        return
    repeat = sdpa_attention.repeat_kv
    sdpa_attention.repeat_kv = _repeat_kv(repeat)
    AttentionInterface.register("sdpa", _saving_unrepeated(AttentionInterface._global_mapping["sdpa"], repeat))
