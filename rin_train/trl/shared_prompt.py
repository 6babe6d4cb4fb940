"""The update's log-probabilities with each distinct prompt run once, and only completion tokens scored.

Why: a GRPO step's completions share their prompts (num_generations of them each), and on the demo
a prompt is about two thirds of a row's tokens (~65 of ~97). TRL's forward runs every row's prompt
again, and on the CPU its fused LM head also projects every prompt position onto the vocabulary
before discarding it (its compact path, valid positions only, is used where Triton is). Here a
micro-batch's distinct prompts run once, with a KV cache; the cache is indexed out to every row; the
completions run against it; and TRL's own chunked log-prob kernel scores the completion tokens only.
Autograd follows the indexing: each row's gradient flows back, summed, into its prompt's keys and
values, so the loss and its gradient are the ones TRL's forward gives, as exact math.

Not bit for bit: the prompt and the completion run as two forwards (the attention's shapes, and the
GEMMs' row counts, differ from one forward of the whole row), and a shared prompt's gradient is
summed in another order. So it is a run setting, `grpo.shared_prompt` (off by default, on from
`demo@3`), and tests/rin_train/trl/test_shared_prompt.py holds it to TRL's forward within float
rounding: log-probs, entropies and LoRA gradients.

Where sharing would change more than rounding, TRL's forward runs instead: dropout in training
mode or forward hooks (rin_train.shared_prefill.deterministic_and_unobserved), activations scaled
by one amax over the GEMM's tokens (NVFP4/FP8 A4: splitting the forward changes the scale), cache
layers other than full attention (sliding windows), logit scaling or soft-capping in the LM head
(TRL's forward applies them; this one does not), and any input beyond text (images, MoE router
losses).
"""

from __future__ import annotations

import torch
from torch import nn

from rin_train.shared_prefill import Rows, deterministic_and_unobserved, tensor_scaled_activations, unwrapped

LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                    "logits_scaling")
"""Config fields with which TRL's fused head transforms the logits; a model that sets any keeps TRL's forward."""


def shareable(model: nn.Module) -> bool:
    """Whether `model` (a causal LM, or a PEFT model of one) may run its log-probs here."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    base = unwrapped(model)
    config = base.config.get_text_config()
    if any(getattr(config, name, None) is not None for name in LOGIT_TRANSFORMS):
        return False
    if any(type(layer) is not DynamicLayer for layer in DynamicCache(config=config).layers):
        return False
    return deterministic_and_unobserved(base) and not tensor_scaled_activations(base)


def shared_prompt_logps(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                        logits_to_keep: int, *, temperature: float, entropy: bool,
                        batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs (and entropies) of the last `logits_to_keep` tokens of every row, as TRL's
    `_get_per_token_logps_and_entropies` returns them: (rows, logits_to_keep), zero where the mask is 0.

    Rows are `prompt + completion`, the prompts left-padded to one width (TRL's layout); rows whose prompt
    columns (ids and mask) are equal share one prompt forward. `batch_size` splits the rows into passes,
    as TRL does for its no-grad log-probs. The caller checks `shareable(model)` first."""
    rows = input_ids.shape[0]
    step = batch_size or rows
    parts = [_logps(model, input_ids[s:s + step], attention_mask[s:s + step], logits_to_keep, temperature, entropy)
             for s in range(0, rows, step)]
    logps = torch.cat([p[0] for p in parts])
    return logps, torch.cat([p[1] for p in parts]) if entropy else None


def _logps(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int,
           temperature: float, entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    from transformers import DynamicCache
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

    base = unwrapped(model)
    backbone = base.base_model  # the decoder stack without the LM head (base_model_prefix), as TRL's head calls it
    prompt_ids, prompt_mask = input_ids[:, :-keep], attention_mask[:, :-keep]
    completion_ids, completion_mask = input_ids[:, -keep:], attention_mask[:, -keep:]
    prompts = Rows.of(prompt_ids, prompt_mask)
    cache = DynamicCache(config=base.config.get_text_config())
    prompt_states = backbone(input_ids=prompt_ids.index_select(0, prompts.unique),
                             attention_mask=prompt_mask.index_select(0, prompts.unique), cache=cache,
                             use_cache=True).last_hidden_state
    cache.reorder_cache(prompts.inverse)  # every row's prompt keys and values (index_select: gradients sum back)
    completion_states = backbone(input_ids=completion_ids, attention_mask=attention_mask, cache=cache,
                                 use_cache=True).last_hidden_state
    # position t's hidden state predicts token t + 1: the prompt's last predicts the first completion token
    hidden = torch.cat([prompt_states[:, -1:].index_select(0, prompts.inverse), completion_states[:, :-1]], dim=1)
    scored = completion_mask != 0
    head = base.get_output_embeddings()
    per_token = ChunkedLogProbFunction.apply(
        hidden[scored], head.weight, head.bias, completion_ids[scored], temperature, _CHUNKED_LOGPROB_CHUNK_SIZE,
        None, 1.0, ("log_probs", "entropy") if entropy else ("log_probs",))
    logps = per_token[0].new_zeros(scored.shape).masked_scatter(scored, per_token[0])
    return logps, per_token[1].new_zeros(scored.shape).masked_scatter(scored, per_token[1]) if entropy else None
