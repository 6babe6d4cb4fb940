"""TRL's chunked log-prob backward on the CPU, with the logits tile's gradient formed in place.

Why: without Triton, `trl.kernels.chunked_logprob` folds each [tokens, 32768] logits tile into its
gradient with whole-tile torch expressions, and the function's locals keep every intermediate (the
scaled logits, z, log p, p, a zero gradient, the target mask and the products) alive until it returns:
about eight tiles, 108 MiB for a demo pass's 108 completion tokens, on top of all the activations the
backward is about to free, at the moment it starts. Here the same operations, in the same order, write
into the tile and two buffers (three and a quarter tiles). Multiplication and addition are commutative
in IEEE arithmetic, so reordering a product's operands changes no bit, and `0 + x` (TRL's zero-initialised
gradient) is `x + 0`: tests/rin_train/trl/test_lean_logprob_grad.py compares the bits with TRL's fold.

Softcapped logits and non-fp32 tiles take TRL's own fold; a TRL whose fold has another signature is left
alone (`install` returns False).
"""

from __future__ import annotations

import inspect

import torch

_PARAMETERS = ("tile", "tile_stride", "targets", "log_z", "entropy", "grad_logprobs", "grad_entropy", "vocab_start",
               "n_cols", "logit_scale", "softcap", "inv_t", "HAS_SOFTCAP", "HAS_LOGPROB_GRAD", "HAS_ENTROPY_GRAD",
               "BLOCK_SIZE")


def lean_backward_tile(tile, tile_stride, targets, log_z, entropy, grad_logprobs, grad_entropy, vocab_start, n_cols,
                       logit_scale, softcap, inv_t, HAS_SOFTCAP, HAS_LOGPROB_GRAD, HAS_ENTROPY_GRAD, BLOCK_SIZE,
                       *, _trl_fold=None):
    """`trl.kernels.chunked_logprob._backward_tile`'s result, bit for bit, written into `tile`."""
    if HAS_SOFTCAP or tile.dtype != torch.float32:
        return _trl_fold(tile, tile_stride, targets, log_z, entropy, grad_logprobs, grad_entropy, vocab_start,
                         n_cols, logit_scale, softcap, inv_t, HAS_SOFTCAP, HAS_LOGPROB_GRAD, HAS_ENTROPY_GRAD,
                         BLOCK_SIZE)
    log_p = tile.mul_(logit_scale).mul_(inv_t).sub_(log_z.unsqueeze(-1))  # y, z, log p
    p = torch.exp(log_p)
    if HAS_LOGPROB_GRAD:
        is_target = torch.arange(vocab_start, vocab_start + n_cols, device=tile.device) == targets.unsqueeze(-1)
        grad = is_target.float()
        del is_target
        grad.sub_(p).mul_(grad_logprobs.unsqueeze(-1)).add_(0.0)  # 0 + g (1[target] - p), as TRL's grad += ...
    else:
        grad = torch.zeros_like(p)
    if HAS_ENTROPY_GRAD:
        grad.sub_(p.mul_(grad_entropy.unsqueeze(-1)).mul_(log_p.add_(entropy.unsqueeze(-1))))
    del p
    tile.copy_(grad.mul_(inv_t).mul_(logit_scale))


def install() -> bool:
    """Put the lean fold in TRL's place (once); False where TRL's fold is not the one it reproduces."""
    from trl.kernels import chunked_logprob

    current = chunked_logprob._backward_tile
    if getattr(current, "__wrapped_trl_fold__", None) is not None:
        return True
    if tuple(inspect.signature(current).parameters) != _PARAMETERS:
        return False

    def fold(*args, **kwargs):
        return lean_backward_tile(*args, **kwargs, _trl_fold=current)

    fold.__wrapped_trl_fold__ = current
    chunked_logprob._backward_tile = fold
    return True
