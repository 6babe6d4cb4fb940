"""srdd.qlinear: bf16-exact formats, GEMMs in another dtype than the weights, the frozen-weight cache."""

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from srdd.errors import SrddError
from srdd.formats import fake_quantize
from srdd.models import load_causal_lm
from srdd.qlinear import LinearQuantConfig, QuantLinear, bf16_exact, quantize_linears
from srdd.quiet import library_notices_silenced

BF16 = LinearQuantConfig("mxfp4", "w4a4", matmul_dtype="bfloat16")


def _inputs() -> list[torch.Tensor]:
    """Ordinary values and blocks small enough to reach the smallest E8M0 scales and bf16's subnormals."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(16, 128, generator=g) * scale for scale in (1.0, 1e4, 2.0**-120, 2.0**-126, 2.0**-135)]


@pytest.mark.parametrize("fmt,exact", [("mxfp4", True), ("mxfp6_e2m3", True), ("mxfp6_e3m2", True), ("bf16", True),
                                       ("nvfp4", False), ("int4", False), ("mxfp8_e4m3", False),
                                       ("mxfp8_e5m2", False), ("fp8_e4m3", False)])
def test_bf16_exact_says_whether_bf16_holds_every_quantized_value(fmt, exact):
    assert bf16_exact(fmt) is exact
    held = [torch.equal(q.bfloat16().float(), q) for q in (fake_quantize(x, fmt) for x in _inputs())]
    assert all(held) if exact else not all(held)  # the refused formats do produce values bf16 rounds


def test_matmul_dtype_is_validated():
    with pytest.raises(SrddError, match="matmul_dtype must be one of"):
        LinearQuantConfig("mxfp4", matmul_dtype="float16")


@pytest.fixture
def linear(tiny_model_dir) -> QuantLinear:
    model, _ = load_causal_lm(str(tiny_model_dir))
    model.requires_grad_(False)  # frozen, as under LoRA
    layer = model.model.layers[0].mlp.down_proj
    quantize_linears(model, BF16)
    return layer


def test_bf16_matmul_multiplies_the_exact_quantized_operands(linear):
    x = torch.randn(2, 5, linear.in_features)
    expected = F.linear(fake_quantize(x, "mxfp4").bfloat16(), fake_quantize(linear.weight.detach(), "mxfp4").bfloat16())
    with torch.no_grad():
        y = linear(x)
    assert y.dtype == torch.float32 and linear.weight.dtype == torch.float32
    assert torch.equal(y, expected.float())


def test_a_changed_frozen_weight_is_requantized_into_the_same_buffers(linear):
    x = torch.randn(3, linear.in_features)
    with torch.no_grad():
        linear(x)
        linear(x)
        assert linear.weight_quantizations == 1
        cached = linear.matmul_weight(torch.bfloat16)
        pointers = (cached.data_ptr(), linear._wq_quantized.data_ptr())
        linear.weight.mul_(1.5)  # as noise injection does: an in-place write
        y = linear(x)
    assert linear.weight_quantizations == 2
    assert (linear._wq_cache.data_ptr(), linear._wq_quantized.data_ptr()) == pointers
    expected = F.linear(fake_quantize(x, "mxfp4").bfloat16(), fake_quantize(linear.weight.detach(), "mxfp4").bfloat16())
    assert torch.equal(y, expected.float())


def test_forwards_in_two_threads_quantize_a_changed_weight_once(linear, monkeypatch):
    """Validation batches and update passes run forwards in threads: the first two after a weight changed must
    not both recompute its cache (the second would overwrite a buffer the first one's GEMM or graph reads)."""
    import threading
    import time

    refresh = QuantLinear._refresh_frozen

    def slow(self, *args, **kwargs):
        time.sleep(0.2)  # the other thread reaches its forward meanwhile
        refresh(self, *args, **kwargs)

    monkeypatch.setattr(QuantLinear, "_refresh_frozen", slow)
    x = torch.randn(3, linear.in_features)
    outs = [None, None]

    def forward(i):
        with torch.no_grad():
            outs[i] = linear(x)

    workers = [threading.Thread(target=forward, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert linear.weight_quantizations == 1
    assert torch.equal(outs[0], outs[1])


def test_a_served_weight_is_multiplied_by_until_serving_stops_and_the_parameter_stays_clean(linear):
    x = torch.randn(3, linear.in_features)
    clean = linear.weight.detach().clone()
    noisy = clean + 0.01 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))

    def expected(w):
        return F.linear(fake_quantize(x, "mxfp4").bfloat16(), fake_quantize(w, "mxfp4").bfloat16()).float()

    with torch.no_grad():
        linear(x)
        pointers = (linear._wq_cache.data_ptr(), linear._wq_quantized.data_ptr())
        linear.serve(noisy)
        served = [linear(x), linear(x)]
        assert torch.equal(linear.weight, clean)  # the parameter is its own clean master
        linear.stop_serving()
        back = linear(x)
    assert all(torch.equal(y, expected(noisy)) for y in served)
    assert torch.equal(back, expected(clean))
    assert linear.weight_quantizations == 3  # clean, served, clean again: nothing per call
    assert (linear._wq_cache.data_ptr(), linear._wq_quantized.data_ptr()) == pointers  # into the same buffers


def test_a_trainable_or_misshapen_weight_is_refused_for_serving(linear):
    with pytest.raises(SrddError, match="shape"):
        linear.serve(torch.zeros(2, 2))
    linear.weight.requires_grad_(True)
    with pytest.raises(SrddError, match="trainable"):
        linear.serve(linear.weight.detach())


def test_lora_gets_gradients_through_bf16_matmuls(tiny_model_dir):
    model, _ = load_causal_lm(str(tiny_model_dir))
    with library_notices_silenced():  # peft asks transformers 5 a deprecated attribute
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"],
                                                 task_type="CAUSAL_LM"))
    quantize_linears(model, BF16)
    ids = torch.randint(4, 100, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert lora and all(p.dtype == torch.float32 for p in lora.values())  # adapters stay fp32
    # q_proj's adapters get their gradient back through o_proj's quantized bf16 GEMM (STE + casts)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora.items() if "lora_B" in n)


def test_trainable_weights_go_through_the_ste_and_the_cast_every_call(linear):
    linear.weight.requires_grad_(True)
    x = torch.randn(4, linear.in_features, requires_grad=True)
    linear(x).sum().backward()
    linear(x).sum().backward()
    assert linear.weight_quantizations == 2
    assert linear.weight.grad.dtype == torch.float32 and linear.weight.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


NVFP4_W4A16 = LinearQuantConfig("nvfp4", "w4a16")


def _lora_model(tiny_model_dir, backend: str):
    """The tiny model with LoRA adapters under NVFP4 W4A16 in fp32, its frozen weights cached under `backend`
    (`native` packs them, `eager` keeps fp32 copies)."""
    from srdd.formats import set_backend

    set_backend(backend)
    torch.manual_seed(3)
    model, _ = load_causal_lm(str(tiny_model_dir))
    with library_notices_silenced():
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"],
                                                 task_type="CAUSAL_LM", init_lora_weights=False))
    quantize_linears(model, NVFP4_W4A16)
    return model


def test_frozen_e2m1_weights_are_held_packed_and_train_bit_for_bit_as_fp32_copies(tiny_model_dir, monkeypatch):
    from srdd.formats import set_backend
    from srdd.formats.packed import PackedE2M1

    ids = torch.randint(4, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    runs = {}
    try:
        for backend, packed in (("eager", "1"), ("native", "0"), ("native", "1")):
            monkeypatch.setenv("SRDD_PACKED_WEIGHTS", packed)
            model = _lora_model(tiny_model_dir, backend)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            linears = [m for m in model.modules() if isinstance(m, QuantLinear)]
            runs[backend, packed] = (loss.detach(),
                                     {n: p.grad for n, p in model.named_parameters() if p.requires_grad},
                                     [m._wq_cache for m in linears], sum(m.cache_bytes for m in linears))
    finally:
        set_backend("auto")
    (loss_fp32, grads_fp32, caches_fp32, held_fp32), (loss, grads, caches, held) = runs["eager", "1"], runs["native", "1"]
    assert caches and all(isinstance(c, PackedE2M1) for c in caches)
    for unpacked in (caches_fp32, runs["native", "0"][2]):  # no kernel to pack with, or not asked to
        assert all(isinstance(c, torch.Tensor) and c.dtype == torch.float32 for c in unpacked)
    assert held_fp32 == 4 * sum(c.numel() for c in caches_fp32) and held * 16 == held_fp32 * 3
    assert torch.equal(loss, loss_fp32)
    # every linear's backward unpacked its own weight, although each forward overwrote the one before it
    assert grads.keys() == grads_fp32.keys() and all(torch.equal(grads[n], grads_fp32[n]) for n in grads)


def test_a_graph_keeps_the_packed_weight_it_saw_when_the_served_weight_changes(tiny_model_dir, monkeypatch):
    from srdd.formats import set_backend

    monkeypatch.setenv("SRDD_PACKED_WEIGHTS", "1")
    set_backend("native")
    try:
        model, _ = load_causal_lm(str(tiny_model_dir))
        model.requires_grad_(False)
        layer = model.model.layers[0].mlp.down_proj
        quantize_linears(model, NVFP4_W4A16)
        clean = layer.weight.detach().clone()
        x = torch.randn(3, layer.in_features, requires_grad=True)
        layer(x).sum().backward()
        expected = x.grad.clone()
        x.grad = None
        loss = layer(x).sum()
        layer.serve(clean * 3)  # a noise write between a forward and its backward
        with torch.no_grad():
            layer(x)  # and a forward that unpacks the new weight into the scratch buffer the graph's came from
        loss.backward()
        assert torch.equal(x.grad, expected)
        assert torch.equal(x.grad, torch.ones(3, layer.out_features) @ fake_quantize(clean, "nvfp4"))
    finally:
        set_backend("auto")
