"""The deployed model: Q(W + B·A)·Q(x) inside `lora_merged` and `lora_served`, fresh caches, a bit-exact restore,
and no copy of the weights where none is needed."""

import pytest
import torch
import torch.nn.functional as F

from rin_train.lora_merge import lora_merged, lora_served
from srdd.formats import fake_quantize
from srdd.models import decoder_layers, load_causal_lm
from srdd.qlinear import LinearQuantConfig, quantize_linears
from srdd.quiet import library_notices_silenced


@pytest.fixture
def policy(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    model = load_causal_lm(str(tiny_model_dir))[0]
    torch.manual_seed(0)
    with library_notices_silenced():  # as srdd train wraps it: transformers' deprecation notice is not ours
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"]))
    with torch.no_grad():  # a trained-looking adapter: B is zero at initialisation
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    quantize_linears(model, LinearQuantConfig("mxfp4", "w4a4"))
    return model


def test_merged_forward_is_the_requantized_merged_weight(policy):
    lora_q = decoder_layers(policy)[0].self_attn.q_proj
    base = lora_q.base_layer
    x = torch.randn(3, 5, base.in_features)
    w0 = base.weight.detach().clone()
    with torch.no_grad():
        separate = lora_q(x)  # Q(W)·Q(x) + B·A·x, and it fills the frozen-weight cache with Q(W)
    with torch.no_grad():
        delta = lora_q.get_delta_weight("default")
    with lora_merged(policy), torch.no_grad():
        merged = lora_q(x)
        expected = F.linear(fake_quantize(x, "mxfp4"), fake_quantize(w0 + delta, "mxfp4"), base.bias)
        assert torch.equal(merged, expected)  # not the stale cached Q(W): the cache was refreshed
        assert not torch.equal(merged, separate)
    assert torch.equal(base.weight, w0)  # restored bit for bit, not W + BA - BA
    with torch.no_grad():
        assert torch.equal(lora_q(x), separate)
    assert not any(getattr(m, "merged", False) for m in policy.modules() if hasattr(m, "merged_adapters"))


def test_model_outputs_differ_between_merged_and_separate_and_restore_exactly(policy):
    ids = torch.randint(4, 100, (2, 9))
    with torch.no_grad():
        before = policy(input_ids=ids).logits
        with lora_merged(policy):
            merged = policy(input_ids=ids).logits
        after = policy(input_ids=ids).logits
    assert torch.equal(before, after)
    assert not torch.equal(before, merged)


def test_a_model_without_adapters_runs_unchanged(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir))[0]
    ids = torch.randint(4, 100, (1, 6))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        with lora_merged(model):
            inside = model(input_ids=ids).logits
    assert torch.equal(before, inside)


def test_served_merge_gives_the_merged_models_outputs_bit_for_bit_without_writing_a_weight(policy):
    ids = torch.randint(4, 100, (2, 9))
    weights = {n: p.detach().clone() for n, p in policy.named_parameters()}
    with torch.no_grad():
        before = policy(input_ids=ids).logits
        with lora_merged(policy):
            merged = policy(input_ids=ids).logits
        with lora_served(policy):
            served = policy(input_ids=ids).logits
            assert all(torch.equal(p, weights[n]) for n, p in policy.named_parameters())  # nothing written
        after = policy(input_ids=ids).logits
    assert torch.equal(served, merged)
    assert torch.equal(after, before)  # the adapters are back on, the bases serve Q(W) again


def test_untrained_adapters_are_not_merged_and_the_last_merge_keeps_no_copy(policy, monkeypatch):
    clones = []
    real_clone = torch.Tensor.clone
    monkeypatch.setattr(torch.Tensor, "clone", lambda t, *a, **k: clones.append(t.shape) or real_clone(t, *a, **k))
    base = decoder_layers(policy)[0].self_attn.q_proj.base_layer
    w0 = base.weight.detach().clone()
    clones.clear()
    with lora_merged(policy, restore=False):
        assert not torch.equal(base.weight, w0)  # merged...
    assert not torch.equal(base.weight, w0) and not clones  # ...for good, with no snapshot taken
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.zero_()
    merged_w = base.weight.detach().clone()
    clones.clear()
    with lora_merged(policy):
        assert torch.equal(base.weight, merged_w)  # B = 0: W + B·A is W, nothing merged
    assert not clones
