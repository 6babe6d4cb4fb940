"""Sampling's draws made a call ahead give torch.multinomial's samples and leave the default generator where
torch's would, whatever happens between calls; and most of a generation's calls are served ahead, so a
sampler that silently fell back to torch's own draw (comparing torch with itself) fails."""

from contextlib import nullcontext

import pytest
import torch
from transformers import GenerationConfig

from rin_train.prefetched_draws import prefetched_draws
from srdd.quiet import library_notices_silenced
from srdd.threads import torch_threads
from tests.rin_train.tiny_policy import W4A16, left_padded, lora_policy, prompts


def probabilities(rows: int, vocab: int, seed: int) -> torch.Tensor:
    """A softmax over random logits, from its own generator: making it draws nothing from the default one."""
    logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3
    return torch.softmax(logits, dim=-1)


def samples(calls, *, prefetch: bool, between=None) -> tuple[list[torch.Tensor], torch.Tensor, int]:
    """(each call's sample, the generator's state after them, calls served ahead), from seed 0."""
    torch.manual_seed(0)
    out = []
    with prefetched_draws() if prefetch else nullcontext() as sampler:
        for i, probs in enumerate(calls):
            out.append(torch.multinomial(probs, num_samples=1))
            if between is not None:
                between(i)
    return out, torch.default_generator.get_state(), getattr(sampler, "prefetched", 0)


def assert_same(a, b) -> None:
    assert len(a[0]) == len(b[0])
    for x, y in zip(a[0], b[0]):
        assert x.dtype == y.dtype == torch.int64
        assert torch.equal(x, y)
    assert torch.equal(a[1], b[1])


def test_a_generation_of_calls_is_served_ahead_with_torch_samples():
    calls = [probabilities(16, 4099, seed) for seed in range(8)]
    plain, ahead = samples(calls, prefetch=False), samples(calls, prefetch=True)
    assert_same(plain, ahead)
    assert ahead[2] == len(calls) - 1  # all but the first
    assert torch.unique(torch.cat(ahead[0])).numel() > 8  # the samples vary: a fixed answer would compare equal


def test_a_draw_in_between_is_seen_and_the_draw_made_ahead_dropped():
    calls = [probabilities(4, 300, seed) for seed in range(6)]
    foreign = (lambda i: torch.rand(1) if i % 2 == 0 else None)
    plain, ahead = samples(calls, prefetch=False, between=foreign), samples(calls, prefetch=True, between=foreign)
    assert_same(plain, ahead)
    assert ahead[2] == 2  # calls 2 and 4, the ones with no draw since the call before


def test_another_shape_or_dtype_draws_afresh():
    calls = [probabilities(4, 300, 0), probabilities(4, 301, 1), probabilities(4, 301, 2).double(),
             probabilities(1, 300, 3)[0], probabilities(4, 300, 4).t().contiguous().t(),  # 1-D; not contiguous
             probabilities(4, 300, 5), probabilities(4, 300, 6)]
    plain, ahead = samples(calls, prefetch=False), samples(calls, prefetch=True)
    assert_same(plain, ahead)
    assert ahead[0][3].shape == (1,)
    assert ahead[2] == 1  # the last call alone has the layout of the call before it (and no fallback between)


def test_a_generator_or_several_samples_go_to_torch():
    def draw(count: int) -> torch.Tensor:
        return torch.multinomial(probabilities(2, 40, 7), count, replacement=True,
                                 generator=torch.Generator().manual_seed(1))

    expected = [draw(1), draw(3)]
    torch.manual_seed(0)
    with prefetched_draws() as sampler:
        got = [draw(1), draw(3)]
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    assert sampler.prefetched == 0
    assert torch.equal(torch.default_generator.get_state(), torch.manual_seed(0).get_state())


@pytest.mark.parametrize("bad", [float("nan"), -0.1, float("inf"), "zero row"])
def test_invalid_probabilities_raise_torch_error_and_draw_nothing(bad):
    probs = probabilities(3, 20, 0)
    if bad == "zero row":
        probs[1] = 0
    else:
        probs[1, 4] = bad
    errors = []
    for prefetch in (False, True):
        torch.manual_seed(0)
        with prefetched_draws() if prefetch else nullcontext():
            torch.multinomial(probabilities(3, 20, 1), 1)  # a draw is made ahead for the next call
            with pytest.raises(RuntimeError) as raised:
                torch.multinomial(probs, 1)
            errors.append((str(raised.value), torch.default_generator.get_state()))
    assert errors[0][0] == errors[1][0]
    assert torch.equal(errors[0][1], errors[1][1])


def test_blocks_nest_and_torch_multinomial_comes_back():
    original = torch.multinomial
    with prefetched_draws() as outer:
        assert outer is not None and torch.multinomial is not original
        with prefetched_draws() as inner:
            assert inner is None
        assert torch.multinomial is not original
    assert torch.multinomial is original


def test_exponential_draws_do_not_depend_on_the_thread_count():
    draws = []
    for threads in (1, 2):
        with torch_threads(threads):
            torch.manual_seed(5)
            draws.append(torch.empty(16, 49152).exponential_(1))
    assert torch.equal(*draws)


def test_sampled_generation_keeps_its_tokens_and_generator(tiny_model_dir):
    model = lora_policy(tiny_model_dir, W4A16)
    ids, mask = left_padded(prompts(model.config.vocab_size, 4))
    config = GenerationConfig(do_sample=True, temperature=0.9, top_p=None, top_k=None, max_new_tokens=10,
                              min_new_tokens=10, pad_token_id=0, eos_token_id=2)
    runs = []
    for prefetch in (False, True):
        torch.manual_seed(3)
        with torch.no_grad(), library_notices_silenced(), prefetched_draws() if prefetch else nullcontext() as s:
            sequences = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        runs.append((sequences, torch.rand(4), getattr(s, "prefetched", 0)))
    assert torch.equal(runs[0][0], runs[1][0])
    assert torch.equal(runs[0][1], runs[1][1])
    assert runs[1][2] == 9
