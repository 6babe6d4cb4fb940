"""Grouped-query attention's repeated keys and values saved unrepeated (rin_train.unrepeated_kv): the copies are
not kept between forward and backward, the loss and every gradient keep their bits, and a repeated tensor written
in place is refused."""

import gc
import weakref

import pytest
import torch
from transformers.integrations import sdpa_attention
from transformers.modeling_utils import AttentionInterface

import rin_train.unrepeated_kv as unrepeated_kv
from tests.rin_train.tiny_policy import W4A16, left_padded, lora_policy, prompts


@pytest.fixture
def repeats(monkeypatch) -> list[weakref.ref]:
    """transformers' own repeat_kv and SDPA attention back in place for the test (whatever an earlier import
    installed), the repeat recording a weak reference to every copy it makes; restored afterwards."""
    repeat = sdpa_attention.repeat_kv
    repeat = getattr(repeat, "__wrapped_repeat_kv__", repeat)
    attention = AttentionInterface._global_mapping["sdpa"]
    monkeypatch.setitem(AttentionInterface._global_mapping, "sdpa", getattr(attention, "__wrapped_sdpa__", attention))
    made: list[weakref.ref] = []

    def recorded(hidden_states, n_rep):
        out = repeat(hidden_states, n_rep)
        made.append(weakref.ref(out))
        return out

    monkeypatch.setattr(sdpa_attention, "repeat_kv", recorded)
    return made


def _forward(model, ids, mask):
    return model(input_ids=ids, attention_mask=mask).logits.float().square().mean()


def _alive(made: list[weakref.ref]) -> int:
    gc.collect()
    return sum(r() is not None for r in made)


def test_copies_are_dropped_after_the_forward_and_the_bits_stay(tiny_model_dir, repeats):
    model = lora_policy(tiny_model_dir, W4A16)
    ids, mask = left_padded(prompts(model.config.vocab_size, 2))  # left padding: a mask, so repeat_kv copies
    params = [p for p in model.parameters() if p.requires_grad]

    loss = _forward(model, ids, mask)
    layers = model.config.num_hidden_layers
    assert len(repeats) == 2 * layers and _alive(repeats) == 2 * layers  # SDPA keeps every copy for its backward
    before = (loss.detach(), torch.autograd.grad(loss, params))

    unrepeated_kv.install()
    repeats.clear()
    loss = _forward(model, ids, mask)
    assert len(repeats) == 2 * layers and _alive(repeats) == 0
    after = (loss.detach(), torch.autograd.grad(loss, params))
    assert len(repeats) == 4 * layers  # the backward repeated each again
    assert torch.equal(before[0], after[0])
    assert all(torch.equal(b, a) for b, a in zip(before[1], after[1]))

    with torch.no_grad():  # nothing saved, nothing tagged
        _forward(model, ids, mask)


def test_under_another_saved_tensor_hook_the_copies_are_saved_as_before(tiny_model_dir, repeats):
    """Activation checkpointing hooks saved tensors itself: its hook is left to do its work."""
    model = lora_policy(tiny_model_dir, W4A16)
    ids, mask = left_padded(prompts(model.config.vocab_size, 2))
    unrepeated_kv.install()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
        loss = _forward(model, ids, mask)
    assert _alive(repeats) == len(repeats) > 0
    loss.backward()


def test_a_repeated_tensor_written_in_place_is_refused(repeats):
    unrepeated_kv.install()
    attention = AttentionInterface._global_mapping["sdpa"]
    module = torch.nn.Module()
    module.num_key_value_groups = 2
    module.is_causal = True
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, h, 5, 8, generator=g, requires_grad=True) for h in (4, 2, 2))
    key = k * 1.0
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool).tril()
    out, _ = attention(module, q, key, v * 1.0, mask)
    assert _alive(repeats) == 0
    with torch.no_grad():
        key.add_(1.0)
    with pytest.raises(RuntimeError, match="written in place between the forward and the backward"):
        out.sum().backward()
