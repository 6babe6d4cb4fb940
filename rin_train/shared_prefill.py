"""Generation that prefills once what a batch repeats: identical prompts, and (opt-in) the common prefix.

Why: on the CPU a rollout or a validation is FLOP-bound and most of its FLOPs are prefill. TRL
(without vLLM) hands `generate` each prompt num_generations times, so the demo prefilled every
prompt 8 times; and every validation prompt opens with the same chat-template prefix (SmolLM2's
system message, 24 of ~63 tokens). vLLM shares both (n > 1 sampling shares the prompt's KV,
prefix caching the common prefix); transformers' `generate` shares neither.

How: inside `shared_prefill(model)`, the prefill call of `model.generate` (its first forward: an
empty cache and more than one token) runs each distinct row of the left-padded batch (input ids,
mask and positions all equal) once and indexes the cache and the logits back out to every row.
`generate` then samples and decodes exactly as before, on the full batch, from the same RNG state.
With `split_prefix`, the distinct rows' longest common prefix also runs once, as one unpadded row,
its keys and values laid into every row's padded layout (pad columns zero: masked, they weigh
nothing), and the rest of each row runs against that cache.

Bit for bit -- what each part keeps:
- Distinct rows keep every row's layout: the same length, columns and mask, so each attention
  head computes what it did; only the GEMMs' row count shrinks (16 x 63 -> 2 x 63 tokens in the
  demo's rollout). On this repository's CPU (AVX2) MKL's GEMM gives a row the same bits at any row
  count of at least 4 on 1 thread and 12 on 2; fewer rows take small-matrix kernels that sum in
  another order. So sharing needs MIN_ROWS_PER_THREAD rows per thread and otherwise runs the plain
  prefill. Measured equal, logits and caches: SmolLM2's demo rollouts (1 and 2 threads), and a tiny
  Llama's random batches with repeated rows at or above the bound, 0 of 293 (1 thread) and 0 of 288
  (2 threads) differing, for fp32 and for bf16 GEMMs (below it, batches of 2 to 9 rows did differ).
- The prefix split changes the attention's shapes: the prefix runs with its own length (the
  P @ V reduction over keys gets another length and alignment), the rest with fewer queries (SDPA's
  query blocks split differently, and a block of 1-3 queries takes the small-matrix path). That
  is not bit-identical in general: on the tiny Llama 134 of 150 random batches differ in the last
  bits of logits or caches with fp32 GEMMs, 10 of 150 with bf16. On SmolLM2's 64 demo validation
  problems it happens to be exact (every logit and cache entry, 1 and 2 threads;
  benchmarks/bench_shared_prefill.py counts the token ids). So it is off unless asked for
  (`eval.shared_prefix`), and rollouts never split.

Where sharing would change more than rounding, the plain prefill runs:
- a forward with active randomness (dropout > 0 in training mode): rows would share their masks;
- a model with forward hooks: they would see another batch (the noise injector measures an RMSNorm
  target's effective sigma, and under `noise.sigma_basis: effective` sets it, on the first rollout
  forward's activations);
- inputs other than what a text `generate` passes, or a cache other than a DynamicCache.
The prefix is not split off where activations are quantized with a per-tensor scale (NVFP4/FP8
W4A4, A4: the scale would see other tokens), where a cache layer is not a full-attention
DynamicLayer (sliding windows), or where the mask is not left padding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from srdd.formats import get_format
from srdd.qlinear import quantized_modules
from srdd.threads import small_gemm_threads, torch_threads

MIN_ROWS_PER_THREAD = 8
"""Fewest GEMM rows (tokens) per thread a shared prefill may run: on this repository's CPU, MKL's fp32 GEMM
gives a row other bits below 4 rows (1 thread) or 12 (2 threads); 8 per thread leaves a margin there, and
more threads are untested."""

PREFILL_KWARGS = frozenset({"input_ids", "attention_mask", "position_ids", "cache", "use_cache", "logits_to_keep",
                            "return_dict"})
"""What `generate` passes a text model's prefill; any other input (embeddings, images, attentions asked
back) may be laid out per row in ways this module does not know, so it gets the plain prefill."""


@contextmanager
def shared_prefill(model: nn.Module, *, split_prefix: bool = False) -> Iterator[None]:
    """Inside the block, `model.generate` prefills each distinct prompt once; with `split_prefix`, also
    the prompts' common prefix once (not bit-identical in general: see the module's docstring). Its
    prefill runs on torch's threads, its token-by-token steps on srdd.threads.small_gemm_threads() (one
    where threads wait passively: the same bits in less time).

    `model` may be a PEFT model: the forward replaced is the one `generate` calls, its base model's,
    whatever it is at the time (TRL leaves the class's forward set on the instance; accelerate's offload
    hooks set theirs), and it is put back as it was. Inside an enclosing block nothing changes."""
    target = unwrapped(model)
    previous = vars(target).get("forward")
    if getattr(previous, "shares_prefill", False):
        yield
        return
    target.forward = _sharing(target.forward, target, split_prefix, torch.get_num_threads())
    try:
        with torch_threads(small_gemm_threads()):
            yield
    finally:
        if previous is None:
            del target.forward
        else:
            target.forward = previous


def unwrapped(model: nn.Module) -> nn.Module:
    """The causal LM a PEFT model wraps (its forward is the one `generate` and TRL's head call), else `model`."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _sharing(forward: Callable, model: nn.Module, split_prefix: bool, threads: int) -> Callable:
    """`forward`, with its prefill calls shared and run on `threads` (the block's decode steps may run on fewer:
    srdd.threads.small_gemm_threads); functools.wraps keeps the signature `generate` inspects."""

    @functools.wraps(forward)
    def wrapper(*args, **kwargs):
        ids = kwargs.get("input_ids")
        with torch_threads(threads) if isinstance(ids, torch.Tensor) and ids.shape[-1] > 1 else nullcontext():
            if args or not _is_prefill(kwargs) or not deterministic_and_unobserved(model):
                return forward(*args, **kwargs)
            return _prefill(forward, model, split_prefix, **kwargs)

    wrapper.shares_prefill = True
    return wrapper


def _is_prefill(kwargs: dict) -> bool:
    """A text model's first forward in `generate`: an empty DynamicCache and more than one token per row."""
    from transformers import DynamicCache

    ids, cache = kwargs.get("input_ids"), kwargs.get("cache")
    return (set(kwargs) <= PREFILL_KWARGS and kwargs.get("use_cache") is True and isinstance(cache, DynamicCache)
            and cache.get_seq_length() == 0 and isinstance(ids, torch.Tensor) and ids.dim() == 2 and ids.shape[1] > 1)


def deterministic_and_unobserved(model: nn.Module) -> bool:
    """No dropout draws and no hooks: then a row's prefill is a function of that row alone."""
    for module in model.modules():
        if module._forward_hooks or module._forward_pre_hooks:
            return False
        if module.training and isinstance(module, nn.Dropout) and module.p > 0:
            return False
    if model.training and getattr(model.config, "attention_dropout", 0.0):
        return False
    return not (nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)


@dataclass(frozen=True)
class Rows:
    """The distinct rows of a batch: `unique` indexes the first of each, `inverse` maps every row to its own."""

    unique: torch.Tensor
    inverse: torch.Tensor

    @classmethod
    def of(cls, *columns: torch.Tensor) -> Rows:
        """Rows equal in every one of `columns` (each (batch, length)) are one row, in first-appearance order."""
        index: dict[tuple[int, ...], int] = {}
        unique: list[int] = []
        inverse: list[int] = []
        for i, row in enumerate(map(tuple, torch.cat(columns, dim=1).tolist())):
            if row not in index:
                index[row] = len(unique)
                unique.append(i)
            inverse.append(index[row])
        device = columns[0].device
        return cls(torch.tensor(unique, device=device), torch.tensor(inverse, device=device))

    @property
    def repeated(self) -> bool:
        return len(self.unique) < len(self.inverse)


def common_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> int:
    """How many leading tokens every (left-padded) row shares, at positions 0, 1, ...: 0 if the rows do
    not follow left padding (their pads first, then only real tokens)."""
    length = input_ids.shape[1]
    pads = (attention_mask == 0).sum(dim=1)
    columns = torch.arange(length, device=input_ids.device)
    if not torch.equal(attention_mask != 0, columns >= pads[:, None]):
        return 0
    shortest = int(length - pads.max())
    cols = pads[:, None] + columns[:shortest]
    tokens = input_ids.gather(1, cols)
    shared = (tokens == tokens[:1]).all(dim=0) & (position_ids.gather(1, cols) == columns[:shortest]).all(dim=0)
    return int(shared.long().cumprod(0).sum())


def _split_allowed(model: nn.Module, cache) -> bool:
    """Whether prefix and rest may run as two forwards: no per-tensor activation scale spans the prefill's
    tokens, and every cache layer simply concatenates what it is given."""
    from transformers.cache_utils import DynamicLayer

    if any(type(layer) is not DynamicLayer for layer in cache.layers):
        return False
    return not tensor_scaled_activations(model)


def tensor_scaled_activations(model: nn.Module) -> bool:
    """Whether a quantized linear scales its activations by one amax over the whole GEMM (NVFP4 or FP8 A4):
    then a token's quantized value depends on which other tokens share its forward."""
    return any(m.quant_enabled and m.quant.mode.activations
               and get_format(m.quant.format, **m.quant.options).uses_tensor_amax
               for _, m in quantized_modules(model))


PER_ROW = ("input_ids", "attention_mask", "position_ids")
"""The prefill's inputs laid out by row (`generate` leaves the mask out of a batch without padding)."""


def _prefill(forward: Callable, model: nn.Module, split_prefix: bool, **kwargs):
    """The prefill `generate` asked for, run on the distinct rows (prefix first, if split) and indexed back out."""
    per_row = {key: kwargs[key] for key in PER_ROW if kwargs.get(key) is not None}
    rows = Rows.of(*per_row.values())
    if len(rows.unique) * kwargs["input_ids"].shape[1] < MIN_ROWS_PER_THREAD * torch.get_num_threads():
        return forward(**kwargs)  # too few GEMM rows to give each row its bits
    inputs = {key: value.index_select(0, rows.unique) for key, value in per_row.items()}
    start = _split_start(model, inputs, kwargs) if split_prefix else 0
    if not rows.repeated and not start:
        return forward(**kwargs)
    if start:
        _fill_prefix(forward, kwargs["cache"], inputs, start)
        inputs["input_ids"], inputs["position_ids"] = inputs["input_ids"][:, start:], inputs["position_ids"][:, start:]
    out = forward(**{**kwargs, **inputs})
    if rows.repeated:
        kwargs["cache"].reorder_cache(rows.inverse)
        out["logits"] = out.logits.index_select(0, rows.inverse)
    return out


def _split_start(model: nn.Module, inputs: dict[str, torch.Tensor], kwargs: dict) -> int:
    """The column up to which every distinct row holds pads or the rows' common prefix (0: no split): the
    least-padded row's pads plus the prefix. Before the last column, as distinct rows cannot all end there."""
    ids, mask, positions = (inputs.get(key) for key in PER_ROW)
    keep = kwargs.get("logits_to_keep", 0)
    if mask is None or positions is None or len(ids) < 2 or not _split_allowed(model, kwargs["cache"]):
        return 0
    prefix = common_prefix(ids, mask, positions)
    start = int((mask == 0).sum(dim=1).min()) + prefix
    return start if prefix and isinstance(keep, int) and 0 < keep <= ids.shape[1] - start else 0


def _fill_prefix(forward: Callable, cache, inputs: dict[str, torch.Tensor], start: int) -> None:
    """Run the common prefix once, unpadded, and lay its keys and values into `cache`'s first `start`
    columns, each row's after its own pads."""
    from transformers import DynamicCache

    ids, pads = inputs["input_ids"], (inputs["attention_mask"] == 0).sum(dim=1)
    row = int(pads.argmin())
    tokens = ids[row:row + 1, int(pads[row]):start]
    once = forward(input_ids=tokens, attention_mask=torch.ones_like(tokens), cache=DynamicCache(), use_cache=True,
                   position_ids=torch.arange(tokens.shape[1], device=ids.device)[None], logits_to_keep=1).cache
    for index, layer in enumerate(once.layers):
        cache.update(laid_out(layer.keys, pads, start), laid_out(layer.values, pads, start), index)


def laid_out(states: torch.Tensor, pads: torch.Tensor, width: int) -> torch.Tensor:
    """One row's prefix states (1, heads, prefix, dim) as `width` columns of every row: row i's pads[i]
    zero columns, then the prefix's first width - pads[i] states."""
    source = torch.arange(width, device=pads.device) - pads[:, None]  # (rows, width): which prefix column lands where
    gathered = states[0][:, source.clamp(min=0)].transpose(0, 1)  # (rows, heads, width, dim)
    return torch.where((source >= 0)[:, None, :, None], gathered, 0).contiguous()
