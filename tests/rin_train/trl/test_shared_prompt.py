"""Shared-prompt log-probs against TRL's own forward: the same log-probs, entropies and LoRA gradients up to float
rounding, from fewer tokens; and TRL's forward wherever sharing would change more than rounding."""

import contextlib
import functools
import types

import pytest
import torch
from trl import GRPOTrainer
from trl.trainer.utils import add_fused_lm_head

from rin_train.trl.shared_prompt import shareable, shared_prompt_logps
from tests.rin_train.tiny_policy import W4A4_BF16, W4A4_PER_TENSOR, W4A16, left_padded, lora_policy, prompts

TEMPERATURE = 0.7
COMPLETION = 6
COPIES = 3


def fused(model):
    """`model` with the fused LM head GRPOTrainer gives its policy (what TRL's forward calls)."""
    add_fused_lm_head(model.get_base_model(), temperature=TEMPERATURE, outputs=("log_probs", "entropy"))
    return model


@pytest.fixture(scope="module", params=[W4A4_BF16, W4A16], ids=["mxfp4-w4a4-bf16", "nvfp4-w4a16"])
def policy(request, tiny_model_dir):
    return fused(lora_policy(tiny_model_dir, request.param))


def batch(vocab: int, seed: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A pass as TRL lays it out: left-padded prompts (each COPIES times, shuffled as TRL shuffles a step's
    completions into passes), then right-padded completions of 1..COMPLETION tokens. (ids, mask, completion mask)"""
    g = torch.Generator().manual_seed(seed)
    prompt_ids, prompt_mask = left_padded(prompts(vocab, COPIES))
    order = torch.randperm(len(prompt_ids), generator=g)
    prompt_ids, prompt_mask = prompt_ids[order], prompt_mask[order]
    completion_ids = torch.randint(3, vocab, (len(prompt_ids), COMPLETION), generator=g)
    lengths = torch.randint(1, COMPLETION + 1, (len(prompt_ids),), generator=g)
    completion_mask = (torch.arange(COMPLETION)[None] < lengths[:, None]).long()
    return (torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, completion_mask], 1),
            completion_mask)


def trl_logps(model, ids, mask, batch_size=None):
    """GRPOTrainer's own forward (unbound: it uses nothing of the trainer but the accelerator's autocast)."""
    trainer = types.SimpleNamespace(accelerator=types.SimpleNamespace(autocast=contextlib.nullcontext))
    logps, entropies, _ = GRPOTrainer._get_per_token_logps_and_entropies.__wrapped__(
        trainer, model, ids, mask, COMPLETION, batch_size=batch_size, compute_entropy=True)
    return logps, entropies


def shared_logps(model, ids, mask, batch_size=None):
    return shared_prompt_logps(model, ids, mask, COMPLETION, temperature=TEMPERATURE, entropy=True,
                               batch_size=batch_size)


def with_gradients(compute, model, ids, mask, completion_mask):
    """log-probs, entropies and every LoRA gradient of a loss weighing each completion token differently."""
    model.zero_grad()
    logps, entropies = compute(model, ids, mask)
    weights = torch.linspace(-1, 1, logps.numel()).view_as(logps) * completion_mask
    (logps * weights).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return logps.detach(), entropies.detach(), grads


@pytest.fixture
def backbone_tokens(monkeypatch):
    """Tokens each forward of the decoder stack (LlamaModel) computes, in order."""
    from transformers import LlamaModel

    seen: list[int] = []
    forward = LlamaModel.forward

    @functools.wraps(forward)
    def counting(self, *args, **kwargs):
        seen.append(kwargs["input_ids"].numel())
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaModel, "forward", counting)
    return seen


def test_each_distinct_prompt_runs_once_and_gives_trls_logps_entropies_and_gradients(policy, backbone_tokens):
    policy.train()
    ids, mask, completion_mask = batch(policy.config.vocab_size)
    plain = with_gradients(trl_logps, policy, ids, mask, completion_mask)
    assert backbone_tokens == [ids.numel()]
    shared = with_gradients(shared_logps, policy, ids, mask, completion_mask)
    prompt_width = ids.shape[1] - COMPLETION
    assert backbone_tokens[1:] == [len(prompts(policy.config.vocab_size, 1)) * prompt_width, len(ids) * COMPLETION]
    torch.testing.assert_close(shared[0], plain[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(shared[1], plain[1], rtol=0, atol=1e-5)
    assert (shared[0][completion_mask == 0] == 0).all() and (shared[1][completion_mask == 0] == 0).all()
    assert plain[2].keys() == shared[2].keys() and len(plain[2]) == 18  # A and B of 9 adapted linears
    bf16 = policy.get_base_model().model.layers[0].self_attn.q_proj.base_layer.quant.matmul_dtype == "bfloat16"
    for name, grad in plain[2].items():  # bf16 GEMMs round the gradient's own products to 8 bits
        scale = grad.abs().max()
        assert (shared[2][name] - grad).abs().max() <= (1e-2 if bf16 else 1e-5) * scale, name


def test_passes_of_batch_size_rows_give_the_same_as_one(policy):
    """TRL's no-grad log-probs come in passes of `batch_size` rows: each pass shares its own prompts."""
    policy.eval()
    ids, mask, _ = batch(policy.config.vocab_size, seed=6)
    with torch.no_grad():
        whole, passes = shared_logps(policy, ids, mask), shared_logps(policy, ids, mask, batch_size=4)
        plain = trl_logps(policy, ids, mask, batch_size=4)
    for a, b, c in zip(whole, passes, plain):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
        torch.testing.assert_close(b, c, rtol=0, atol=1e-5)


def test_what_would_change_more_than_rounding_keeps_trls_forward(tiny_model_dir, policy):
    assert shareable(policy)
    assert not shareable(fused(lora_policy(tiny_model_dir, W4A4_PER_TENSOR)))  # one activation amax per GEMM
    with_dropout = fused(lora_policy(tiny_model_dir, W4A16, dropout=0.1))
    with_dropout.train()
    assert not shareable(with_dropout)  # the copies of a prompt would share their dropout masks
    with_dropout.eval()
    assert shareable(with_dropout)
    handle = policy.get_base_model().model.norm.register_forward_hook(lambda *_: None)
    try:
        assert not shareable(policy)  # a hook would see other batches
    finally:
        handle.remove()
    policy.config.final_logit_softcapping = 30.0
    try:
        assert not shareable(policy)  # TRL's head would cap the logits; this one does not
    finally:
        policy.config.final_logit_softcapping = None
