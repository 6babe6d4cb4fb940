"""Shared prefill: each distinct prompt prefilled once gives generate's plain tokens and logits bit for bit;
the opt-in prefix split gives the same up to float rounding. Each comparison also counts the prefill's
tokens, so a path that silently fell back to the plain prefill (comparing the plain path with itself) fails."""

import functools
from contextlib import nullcontext

import pytest
import torch
from transformers import GenerationConfig

from rin_train.shared_prefill import MIN_ROWS_PER_THREAD, Rows, common_prefix, laid_out, shared_prefill
from srdd.quiet import library_notices_silenced
from srdd.threads import WAIT_POLICY, torch_threads
from tests.rin_train.tiny_policy import (PREFIX, SUFFIXES, W4A4_BF16, W4A4_PER_TENSOR, W4A16, left_padded, lora_policy,
                                         prompts)


@pytest.fixture(scope="module", params=[W4A4_BF16, W4A16], ids=["mxfp4-w4a4-bf16", "nvfp4-w4a16"])
def policy(request, tiny_model_dir):
    return lora_policy(tiny_model_dir, request.param)


@pytest.fixture(autouse=True)
def spinning_threads(monkeypatch):
    """Plain and shared generation on the same threads, so that what is compared is the prefill alone: with
    passive waiting the shared path decodes on one thread (the last test here), and on this tiny model's
    shapes MKL's fp32 GEMM gives other bits on one thread than on two."""
    monkeypatch.setenv(WAIT_POLICY, "ACTIVE")


@pytest.fixture
def prefill_tokens(monkeypatch):
    """Tokens each forward of LlamaForCausalLM computes with more than one token (the prefill's), in order."""
    from transformers import LlamaForCausalLM

    seen: list[int] = []
    forward = LlamaForCausalLM.forward

    @functools.wraps(forward)
    def counting(self, *args, **kwargs):
        if kwargs["input_ids"].shape[1] > 1:
            seen.append(kwargs["input_ids"].numel())
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "forward", counting)
    return seen


def generate(model, ids, mask, *, sample: bool, shared: bool, split_prefix: bool = False, seed: int = 0,
             config: GenerationConfig | None = None):
    """(sequences, per-step logits) of one generate call, from a fixed RNG state."""
    config = config or GenerationConfig(do_sample=sample, temperature=0.7 if sample else None, top_p=None,
                                        top_k=None, max_new_tokens=6, pad_token_id=0, eos_token_id=2)
    torch.manual_seed(seed)
    with torch.no_grad(), shared_prefill(model, split_prefix=split_prefix) if shared else nullcontext():
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, output_logits=True,
                             return_dict_in_generate=True)
    return out.sequences, out.logits


def assert_identical(plain, shared) -> None:
    assert torch.equal(plain[0], shared[0])
    assert len(plain[1]) == len(shared[1]) and all(torch.equal(a, b) for a, b in zip(plain[1], shared[1]))


@pytest.mark.parametrize("interleaved", [False, True], ids=["in-a-row", "interleaved"])
@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_each_distinct_prompt_prefilled_once_generates_the_plain_tokens_and_logits(policy, prefill_tokens, sample,
                                                                                   interleaved):
    policy.train(sample)  # rollouts sample in training mode (no dropout), validation is greedy in eval mode
    ids, mask = left_padded(prompts(policy.config.vocab_size, copies=4, interleaved=interleaved))
    plain = generate(policy, ids, mask, sample=sample, shared=False)
    shared = generate(policy, ids, mask, sample=sample, shared=True)
    assert_identical(plain, shared)
    assert prefill_tokens == [ids.numel(), len(SUFFIXES) * ids.shape[1]]  # 12 rows, then their 3 distinct ones


def test_a_batch_without_padding_is_shared_too(policy, prefill_tokens):
    """Prompts of one length: `generate` passes no attention mask at all."""
    policy.train()
    vocab = policy.config.vocab_size
    ids, mask = left_padded(prompts(vocab, copies=4)[:4] + prompts(vocab, copies=4, seed=2)[:4])
    assert bool(mask.all())
    plain = generate(policy, ids, mask, sample=True, shared=False)
    assert_identical(plain, generate(policy, ids, mask, sample=True, shared=True))
    assert prefill_tokens == [ids.numel(), 2 * ids.shape[1]]


def test_the_copies_of_a_prompt_sample_apart(policy):
    """Four copies of a prompt draw different continuations, as from the plain prefill: each row has its cache."""
    policy.train()
    ids, mask = left_padded(prompts(policy.config.vocab_size, copies=4))
    sequences = generate(policy, ids, mask, sample=True, shared=True, seed=3)[0]
    assert len({tuple(row) for row in sequences[:4].tolist()}) > 1


@pytest.mark.parametrize("sample", [False, True], ids=["greedy", "sampled"])
def test_the_prefix_split_generates_the_plain_tokens_up_to_rounding(policy, prefill_tokens, sample):
    """Prefix once, then each distinct prompt from where the shortest-padded one's prefix ends: the same
    tokens, logits equal to float rounding (not bit for bit: the attention runs in other shapes)."""
    policy.train(sample)
    ids, mask = left_padded(prompts(policy.config.vocab_size, copies=2))
    plain = generate(policy, ids, mask, sample=sample, shared=False)
    split = generate(policy, ids, mask, sample=sample, shared=True, split_prefix=True)
    assert torch.equal(plain[0], split[0])
    for a, b in zip(plain[1], split[1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert prefill_tokens == [ids.numel(), PREFIX, len(SUFFIXES) * (ids.shape[1] - PREFIX)]


def test_per_tensor_activation_scales_keep_the_prefix_in_the_batch(tiny_model_dir, prefill_tokens):
    """NVFP4 W4A4 scales activations by the tensor's amax: identical rows (the same amax) are still shared,
    the prefix (other tokens, another amax) is not split off."""
    model = lora_policy(tiny_model_dir, W4A4_PER_TENSOR)
    ids, mask = left_padded(prompts(model.config.vocab_size, copies=4))
    plain = generate(model, ids, mask, sample=True, shared=False)
    assert_identical(plain, generate(model, ids, mask, sample=True, shared=True, split_prefix=True))
    assert prefill_tokens == [ids.numel(), len(SUFFIXES) * ids.shape[1]]


def test_dropout_in_training_gets_the_plain_prefill(tiny_model_dir, prefill_tokens):
    model = lora_policy(tiny_model_dir, W4A16, dropout=0.1)
    model.train()  # every row draws its own dropout mask: shared rows would share masks
    ids, mask = left_padded(prompts(model.config.vocab_size, copies=2))
    generate(model, ids, mask, sample=True, shared=True)
    assert prefill_tokens == [ids.numel()]


def test_a_hooked_model_gets_the_plain_prefill(tiny_model_dir, prefill_tokens):
    """A forward hook (the noise injector's RMSNorm measurement) must see the batch the plain prefill runs."""
    model = lora_policy(tiny_model_dir, W4A16)
    model.get_base_model().model.layers[0].input_layernorm.register_forward_hook(lambda module, args, out: None)
    ids, mask = left_padded(prompts(model.config.vocab_size, copies=2))
    generate(model, ids, mask, sample=True, shared=True)
    assert prefill_tokens == [ids.numel()]


def test_too_few_rows_to_share_exactly_get_the_plain_prefill(policy, prefill_tokens):
    """Below MIN_ROWS_PER_THREAD GEMM rows per thread MKL computes a row with other kernels."""
    ids, mask = left_padded([[5, 6]] * 3)  # one distinct prompt of 2 tokens: 2 GEMM rows to share
    assert 2 < MIN_ROWS_PER_THREAD * torch.get_num_threads()
    generate(policy, ids, mask, sample=False, shared=True)
    assert prefill_tokens == [ids.numel()]


def test_the_forward_is_restored_after_the_block(policy):
    inner = policy.get_base_model()
    with shared_prefill(policy):
        sharing = inner.forward
        with shared_prefill(policy):  # nested: left alone
            assert inner.forward is sharing
        assert inner.forward is sharing
    assert "forward" not in vars(inner)
    inner.forward = own = inner.forward  # the class's forward set on the instance, as TRL leaves it
    try:
        with shared_prefill(policy):
            assert inner.forward is not own
        assert vars(inner)["forward"] is own
    finally:
        del inner.forward


def test_rows_index_the_first_of_each_distinct_row():
    ids = torch.tensor([[5, 6], [5, 6], [7, 8], [5, 6]])
    rows = Rows.of(ids, torch.ones_like(ids))
    assert rows.unique.tolist() == [0, 2] and rows.inverse.tolist() == [0, 0, 1, 0] and rows.repeated
    assert not Rows.of(ids, torch.tensor([[1, 1], [0, 1], [1, 1], [1, 0]])).repeated  # masks tell rows apart


def test_common_prefix_counts_from_each_rows_first_real_token():
    ids, mask = left_padded([[4, 5, 6, 9], [4, 5, 6, 7, 8], [4, 5, 7]])
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    assert common_prefix(ids, mask, positions) == 2
    assert common_prefix(ids, mask, positions + 1) == 0  # the prefix must sit at positions 0, 1, ...
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert common_prefix(ids, right, positions) == 0  # not left padding


def test_laid_out_puts_each_rows_prefix_after_its_pads():
    states = torch.arange(1, 4, dtype=torch.float32).view(1, 1, 3, 1)  # one head, prefix states 1, 2, 3
    placed = laid_out(states, torch.tensor([0, 2, 4]), width=3)  # the least-padded row ends the prefix
    assert placed[:, 0, :, 0].tolist() == [[1, 2, 3], [0, 0, 1], [0, 0, 0]]


@pytest.mark.slow
def test_smollm2_demo_rollouts_and_validation_generate_the_plain_tokens(tmp_path, prefill_tokens):
    """The demo policy (SmolLM2, NVFP4 W4A16, fp32 GEMMs): a rollout of 2 prompts x 8 completions sampled as TRL
    samples them, bit for bit; a validation batch of 32 problems with the prefix split, the same greedy tokens."""
    from rin_train.presets import preset
    from rin_train.run_config import load_run_config
    from rin_train.tasks import load_task, prompt_ids
    from rin_train.train import load_policy
    from rin_train.trl.engine import grpo_args

    cfg = load_run_config(None, [], preset=preset("demo"))
    with library_notices_silenced():  # peft asks transformers 5 a deprecated attribute
        model, tokenizer, _, _ = load_policy(cfg)
    train, test = load_task(cfg.task, cfg.seed)
    args = grpo_args(cfg, tmp_path)
    sampling = GenerationConfig(do_sample=True, max_new_tokens=args.max_completion_length, temperature=args.temperature,
                                top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
                                repetition_penalty=args.repetition_penalty, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=tokenizer.eos_token_id)
    model.train()
    ids, mask = left_padded([prompt_ids(tokenizer, e) for e in train[:2] for _ in range(8)], tokenizer.pad_token_id)
    plain = generate(model, ids, mask, sample=True, shared=False, config=sampling)
    assert_identical(plain, generate(model, ids, mask, sample=True, shared=True, config=sampling))
    assert prefill_tokens[1:] == [2 * ids.shape[1]]

    greedy = GenerationConfig(do_sample=False, max_new_tokens=cfg.eval.max_new_tokens, temperature=None, top_p=None,
                              top_k=None, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model.eval()
    ids, mask = left_padded([prompt_ids(tokenizer, e) for e in test[:32]], tokenizer.pad_token_id)
    prefill_tokens.clear()
    plain = generate(model, ids, mask, sample=False, shared=False, config=greedy)
    split = generate(model, ids, mask, sample=False, shared=True, split_prefix=True, config=greedy)
    assert torch.equal(plain[0], split[0])
    assert prefill_tokens[1] == 24  # SmolLM2's system message and the user turn's opening, once


def test_the_prefill_runs_on_torchs_threads_and_decode_steps_on_one_when_threads_wait_passively(policy, monkeypatch):
    from transformers import LlamaForCausalLM

    seen: list[tuple[int, int]] = []  # (tokens per row, torch threads) of every forward
    forward = LlamaForCausalLM.forward

    @functools.wraps(forward)
    def recording(self, *args, **kwargs):
        seen.append((kwargs["input_ids"].shape[1], torch.get_num_threads()))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "forward", recording)
    monkeypatch.setenv(WAIT_POLICY, "PASSIVE")
    policy.train()
    ids, mask = left_padded(prompts(policy.config.vocab_size, copies=4))
    with torch_threads(2):
        generate(policy, ids, mask, sample=True, shared=True)
        assert torch.get_num_threads() == 2
    assert seen[0] == (ids.shape[1], 2) and seen[1:] == [(1, 1)] * (len(seen) - 1) and len(seen) == 6
