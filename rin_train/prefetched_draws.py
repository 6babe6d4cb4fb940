"""Sampling's random draws made on the core that a decode step leaves idle.

Why: `generate` samples each row's next token with torch.multinomial(probs, 1), which ATen computes
as argmax(probs / q) with q ~ Exp(1), one draw per vocabulary entry (the Gumbel-max trick, its fast
path for one sample). On SmolLM2's 49152 words and the demo's 16 rows that draw takes 18 ms of a
~160 ms decode step, on the one thread decode steps run on (srdd.threads.small_gemm_threads) while the
second core idles. The draws depend on the generator's state and the tensor's shape alone, never on the
probabilities, so they can be made before the probabilities exist.

How: inside `prefetched_draws()`, torch.multinomial(probs, 1) on the CPU's default generator is served
by `PrefetchingSampler`: it draws q as ATen does (empty_like(probs).exponential_(1)), or takes the q
drawn ahead for it, divides and takes the argmax as ATen does, and then has a worker thread draw the
next call's q from a copy of the generator's new state while the next decode step runs. A call takes
the draw made ahead only if the default generator is still in the state the copy started from (nothing
else drew in between) and the shape and dtype match (only contiguous inputs are served); it then moves
the generator to where its own draw would have left it. Otherwise, and for every other call (another
device, a generator passed, more than one sample, an output tensor), torch's own multinomial runs. The draw made ahead for a call
that never comes (after a generation's last step) is dropped: the generator never saw it.

Same bits by construction: the same draws from the same state, then ATen's own division and argmax.
Exp(1) draws on the CPU do not depend on the thread count (checked in the tests), and the worker
starts with the block's thread count (one where decoding runs on one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import torch

_MULTINOMIAL = torch.multinomial
MAX_CATEGORIES = 2**24
"""ATen refuses more categories (FLOAT32_MAX_CONSECUTIVE_INT); such calls go to torch's multinomial to say so."""


def _arguments(input, num_samples, replacement=False, *, generator=None, out=None):
    """torch.multinomial's signature, bound."""
    return input, num_samples, generator, out


def _valid(probs: torch.Tensor) -> bool:
    """ATen's checks before its one-sample draw: finite, non-negative, and no row summing to zero."""
    finite = bool((probs.max() < math.inf) & (probs.min() >= 0))
    return finite and not bool((probs.sum(-1) == 0).any())


@dataclass(frozen=True)
class _Ahead:
    """A draw made ahead: the generator state it started from, the layout it was drawn in, the result."""

    state: torch.Tensor
    layout: tuple
    result: Future


class PrefetchingSampler:
    """torch.multinomial for one sample on the CPU's default generator, its next draw made in a worker thread."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="srdd-draws")
        self._ahead: _Ahead | None = None
        self.prefetched = 0
        """Calls served by a draw made ahead (the tests check that they are most of a generation's)."""

    def __call__(self, *args, **kwargs) -> torch.Tensor:
        probs, num_samples, generator, out = _arguments(*args, **kwargs)
        if not (isinstance(probs, torch.Tensor) and num_samples == 1 and generator is None and out is None
                and probs.device.type == "cpu" and probs.dim() in (1, 2) and probs.is_floating_point()
                and probs.is_contiguous() and probs.numel() and probs.shape[-1] <= MAX_CATEGORIES and _valid(probs)):
            self._ahead = None
            return _MULTINOMIAL(*args, **kwargs)  # its own checks raise where the input is invalid
        layout = (probs.shape, probs.dtype)
        q = self._take(layout)
        if q is None:
            q = torch.empty_like(probs).exponential_(1)
        else:
            self.prefetched += 1
        self._draw_ahead(layout)
        return torch.argmax(torch.div(probs, q, out=q), dim=-1, keepdim=True)

    def _take(self, layout: tuple) -> torch.Tensor | None:
        """The draw made ahead for this call, the default generator moved past it; None if it does not fit."""
        ahead, self._ahead = self._ahead, None
        if ahead is None or ahead.layout != layout or not torch.equal(torch.default_generator.get_state(),
                                                                       ahead.state):
            return None
        q, after = ahead.result.result()
        torch.default_generator.set_state(after)
        return q

    def _draw_ahead(self, layout: tuple) -> None:
        state = torch.default_generator.get_state()
        copy = torch.Generator()
        copy.set_state(state)
        shape, dtype = layout

        def draw() -> tuple[torch.Tensor, torch.Tensor]:
            return torch.empty(shape, dtype=dtype).exponential_(1, generator=copy), copy.get_state()

        self._ahead = _Ahead(state, layout, self._pool.submit(draw))

    def close(self) -> None:
        self._ahead = None
        self._pool.shutdown(wait=True)


@contextmanager
def prefetched_draws() -> Iterator[PrefetchingSampler | None]:
    """Inside the block, torch.multinomial's one-sample draws on the CPU are made a call ahead (see the
    module's docstring); yields the sampler, or None inside an enclosing block, which already does it."""
    if torch.multinomial is not _MULTINOMIAL:
        yield None
        return
    sampler = PrefetchingSampler()
    torch.multinomial = sampler
    try:
        yield sampler
    finally:
        torch.multinomial = _MULTINOMIAL
        sampler.close()
