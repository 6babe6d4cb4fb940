import pytest
import torch

from srdd.formats import fake_quantize, fake_quantize_ste, list_formats


def test_forward_equals_fake_quantize():
    x = torch.randn(4, 64)
    assert torch.equal(fake_quantize_ste(x, "mxfp4"), fake_quantize(x, "mxfp4"))


def test_backward_is_identity_and_non_zero():
    x = torch.randn(4, 64, requires_grad=True)
    w = torch.randn(4, 64)
    (fake_quantize_ste(x, "nvfp4") * w).sum().backward()
    assert torch.equal(x.grad, w)
    assert x.grad.abs().sum() > 0


def test_bf16_gradients_flow():
    x = torch.randn(2, 32, dtype=torch.bfloat16, requires_grad=True)
    fake_quantize_ste(x, "mxfp4", scale_mode="rceil").sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fmt", list_formats())
def test_every_format_forward_matches_and_gradient_is_the_identity(fmt, dtype):
    g = torch.Generator().manual_seed(4)
    x0 = torch.randn(3, 48, generator=g).to(dtype)
    x = x0.clone().requires_grad_(True)
    upstream = torch.randn(3, 48, generator=g).to(dtype)
    y = fake_quantize_ste(x, fmt)
    assert y.dtype == dtype and y.requires_grad
    assert torch.equal(y.detach(), fake_quantize(x0, fmt))
    y.backward(upstream)
    assert torch.equal(x.grad, upstream) and x.grad.abs().sum() > 0
    assert torch.equal(x.detach(), x0)  # the input is never modified in place


def test_gradient_passes_through_in_a_linear_layer_even_where_q_is_zero():
    x = torch.full((2, 32), 1e-3, requires_grad=True)
    x.data[0, 0] = 100.0  # the rest of row 0 falls in the deadzone: q = 0 there
    w = torch.randn(32, 8)
    (fake_quantize_ste(x, "mxfp4") @ w).sum().backward()
    assert fake_quantize(x.detach(), "mxfp4")[0, 1:].eq(0).all()
    assert torch.equal(x.grad, torch.ones(2, 8) @ w.t())  # what autograd gives for an unquantized x
