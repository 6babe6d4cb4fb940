"""rin_train.trl.lean_logprob_grad: TRL's CPU fold of a logits tile into its gradient, in place, the same bits."""

import itertools

import pytest
import torch
from trl.kernels import chunked_logprob

from rin_train.trl.lean_logprob_grad import install, lean_backward_tile

TRL_FOLD = getattr(chunked_logprob._backward_tile, "__wrapped_trl_fold__", chunked_logprob._backward_tile)


def fold_args(seed: int, logprob_grad: bool, entropy_grad: bool, inv_t: float, logit_scale: float, softcap: bool):
    g = torch.Generator().manual_seed(seed)
    n, cols, start = 7, 301, 1000
    tile = torch.randn(n, cols, generator=g) * 6
    tile[0, :5] = -200.0  # exp underflows to 0: the sign of zero must match too
    log_z = torch.logsumexp(tile * logit_scale * inv_t, dim=1) + torch.rand(n, generator=g)
    targets = torch.randint(start, start + cols, (n,), generator=g)
    targets[1] = start + cols + 3  # a row whose target lies in another tile
    entropy = torch.rand(n, generator=g) * 3
    grad_logprobs = torch.randn(n, generator=g) if logprob_grad else None
    grad_entropy = torch.randn(n, generator=g) if entropy_grad else None
    return [tile, cols, targets, log_z, entropy, grad_logprobs if logprob_grad else log_z,
            grad_entropy if entropy_grad else log_z, start, cols, logit_scale, 30.0 if softcap else 1.0, inv_t,
            softcap, logprob_grad, entropy_grad, 1024]


@pytest.mark.parametrize("logprob_grad,entropy_grad,inv_t,logit_scale,softcap",
                         [(lp, ent, inv_t, scale, False) for lp, ent, inv_t, scale in
                          itertools.product([True, False], [True, False], [1.0, 1 / 0.7], [1.0, 0.83])]
                         + [(True, True, 1 / 0.7, 1.0, True)])
def test_the_lean_fold_writes_trls_bits(logprob_grad, entropy_grad, inv_t, logit_scale, softcap):
    for seed in range(3):
        want = fold_args(seed, logprob_grad, entropy_grad, inv_t, logit_scale, softcap)
        have = fold_args(seed, logprob_grad, entropy_grad, inv_t, logit_scale, softcap)
        TRL_FOLD(*want)
        lean_backward_tile(*have, _trl_fold=TRL_FOLD)
        assert torch.equal(have[0].view(torch.int32), want[0].view(torch.int32))  # bits, signed zeros included


def test_install_puts_it_in_trls_place_once(monkeypatch):
    monkeypatch.setattr(chunked_logprob, "_backward_tile", TRL_FOLD)
    assert install() and install()
    assert chunked_logprob._backward_tile.__wrapped_trl_fold__ is TRL_FOLD


def test_a_fold_with_another_signature_is_left_alone(monkeypatch):
    def other(tile, targets):
        pass

    monkeypatch.setattr(chunked_logprob, "_backward_tile", other)
    assert not install()
    assert chunked_logprob._backward_tile is other


def test_a_chunked_logprob_backward_through_the_installed_fold_matches_trls_fold(monkeypatch):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(9, 16, generator=g, requires_grad=True)
    weight = torch.randn(50, 16, generator=g)
    targets = torch.randint(0, 50, (9,), generator=g)

    def grads():
        hidden.grad = None
        logps, entropy, *_ = chunked_logprob.ChunkedLogProbFunction.apply(
            hidden, weight, None, targets, 0.7, 16, None, 1.0, ("log_probs", "entropy"))
        (logps.sum() + 0.1 * entropy.sum()).backward()
        return hidden.grad.clone()

    monkeypatch.setattr(chunked_logprob, "_backward_tile", TRL_FOLD)
    want = grads()
    assert install()
    assert chunked_logprob._backward_tile is not TRL_FOLD
    assert torch.equal(grads().view(torch.int32), want.view(torch.int32))
