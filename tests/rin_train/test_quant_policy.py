"""The quantized LoRA policy: STE gradients, exclusions, single wrapping, weight cache."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from rin_train.noise import NoiseConfig, NoiseInjector
from srdd.errors import SrddError
from srdd.models import load_causal_lm
from srdd.qlinear import LinearQuantConfig, QuantLinear, quantization_disabled, quantize_linears
from srdd.quiet import library_notices_silenced


def _policy(tiny_model_dir, config: LinearQuantConfig):
    model, tok = load_causal_lm(str(tiny_model_dir))
    with library_notices_silenced():  # peft asks transformers 5 a deprecated attribute
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8,
                                                 target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM"))
    names = quantize_linears(model, config)
    return model, names


@pytest.fixture
def policy(tiny_model_dir):
    return _policy(tiny_model_dir, LinearQuantConfig("mxfp4", "w4a4"))


def test_ste_gives_lora_non_zero_gradients_under_w4a4(policy):
    model, _ = policy
    ids = torch.randint(4, 100, (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    lora = {n: p.grad for n, p in model.named_parameters() if "lora_B" in n}
    assert lora and all(g is not None and g.abs().sum() > 0 for g in lora.values())


def test_lm_head_embeddings_and_adapters_are_not_quantized(policy):
    model, names = policy
    assert not any("lm_head" in n or "embed_tokens" in n or "lora_" in n for n in names)
    assert all(n.endswith("base_layer") or not any(t in n for t in ("q_proj", "v_proj", "down_proj"))
               for n in names)
    assert sum(isinstance(m, QuantLinear) for m in model.modules()) == len(names) == 3 * 7


def test_each_linear_is_wrapped_once(policy):
    model, _ = policy
    with pytest.raises(SrddError, match="exactly once"):
        quantize_linears(model, LinearQuantConfig("mxfp4"))


def test_frozen_weights_are_quantized_once_until_they_change(policy):
    model, _ = policy
    q = next(m for n, m in model.named_modules() if n.endswith("q_proj.base_layer"))
    ids = torch.randint(4, 100, (2, 8))
    with torch.no_grad():
        for _ in range(3):
            model(input_ids=ids)
    assert q.weight_quantizations == 1
    injector = NoiseInjector(model, NoiseConfig(targets=["linear"]))
    with torch.no_grad():
        with injector.applied(0, 10):
            model(input_ids=ids)
        model(input_ids=ids)
    assert q.weight_quantizations == 3  # once for the noisy weights, once after the restore


def test_quantization_changes_outputs_and_can_be_disabled(policy, tiny_model_dir):
    model, _ = policy
    ref, _ = load_causal_lm(str(tiny_model_dir))
    ids = torch.randint(4, 100, (1, 10))
    with torch.no_grad():
        quantized = model(input_ids=ids).logits
        with quantization_disabled(model):
            clean = model(input_ids=ids).logits
        expected = ref(input_ids=ids).logits
    assert torch.allclose(clean, expected, atol=1e-5)  # LoRA B starts at zero
    assert not torch.allclose(quantized, expected, atol=1e-3)


def test_rmsnorm_noise_stays_fp32_and_reaches_bf16_matmuls(tiny_model_dir):
    """The default policy (fp32 weights, bf16 GEMMs): noise far below bf16's resolution near 1.0 is kept and
    still changes what the quantized linears compute."""
    model, _ = _policy(tiny_model_dir, LinearQuantConfig("mxfp4", "w4a4", matmul_dtype="bfloat16"))
    injector = NoiseInjector(model, NoiseConfig(targets=["rmsnorm"], schedule="constant", sigma_start=1e-4,
                                                sigma_end=1e-4, num_stages=1, sigma_mode="absolute"))
    ids = torch.randint(4, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        clean = model(input_ids=ids).logits
        with injector.applied(0, 10) as record:
            noisy = model(input_ids=ids).logits
            assert all(t.param.dtype == torch.float32 for t in injector.targets)
    assert all(s == pytest.approx(1e-4, rel=0.3) for s in record["sigma_layers"].values())
    assert not torch.equal(noisy, clean)
