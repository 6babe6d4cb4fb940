import torch

from srdd.formats import fake_quantize, fake_quantize_ste


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
