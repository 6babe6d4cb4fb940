"""Model-level fidelity and per-layer sensitivity against an independent float64 computation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from srdd.calibration_prompts import load_samples, tokenize
from srdd.models import decoder_layers, load_causal_lm
from srdd.qlinear import DEFAULT_EXCLUDE, LinearQuantConfig, quantize_linears
from srdd.scan.runner import ScanConfig, batches, scan_model
from srdd.scan.sensitivity import rank_correlations

REL = 1e-9


def _logit_pairs(ref_model, q_model, tok, cfg):
    """Per batch (the scan's batches: padding changes a GEMM's shape, hence its float32 rounding), both
    models' logits at the positions whose next token is real, and those next tokens."""
    ids = tokenize(load_samples(None, cfg.samples, cfg.seed), tok, cfg.max_tokens)
    out = []
    with torch.no_grad():
        for input_ids, mask in batches(ids, cfg.batch_size, tok.pad_token_id):
            keep = (mask[:, :-1] * mask[:, 1:]).bool()
            ref = ref_model(input_ids=input_ids, attention_mask=mask).logits[:, :-1][keep]
            quant = q_model(input_ids=input_ids, attention_mask=mask).logits[:, :-1][keep]
            out.append((ref, quant, input_ids[:, 1:][keep]))
    return out


def _reference(pairs) -> dict:
    kl, same, nll_p, nll_q = [], [], [], []
    for ref, quant, targets in pairs:
        log_p, log_q = F.log_softmax(ref.double(), -1), F.log_softmax(quant.double(), -1)
        kl.append(F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1))
        same.append(ref.argmax(-1) == quant.argmax(-1))
        nll_p.append(-log_p.gather(-1, targets[:, None]).squeeze(-1))
        nll_q.append(-log_q.gather(-1, targets[:, None]).squeeze(-1))
    kl, same = torch.cat(kl).numpy(), torch.cat(same).double()
    nll_p, nll_q = float(torch.cat(nll_p).mean()), float(torch.cat(nll_q).mean())
    return {"tokens": len(kl), "kl_mean": kl.mean(), "kl_p99": np.percentile(kl, 99), "kl_max": kl.max(),
            "top1_agreement": float(same.mean()), "perplexity_fp": np.exp(nll_p), "perplexity_q": np.exp(nll_q),
            "perplexity_ratio": np.exp(nll_q - nll_p)}


def _check(block: dict, want: dict) -> None:
    assert block["tokens"] == want["tokens"]
    for key, value in want.items():
        assert block[key] == pytest.approx(value, rel=REL, abs=1e-15), key


def _only_layer(index: int) -> tuple[str, ...]:
    """Exclude patterns that leave exactly decoder layer `index` quantized."""
    return (*DEFAULT_EXCLUDE, rf"^model\.layers\.(?!{index}\.)")


@pytest.mark.parametrize("mode", ["isolated", "propagated"])
def test_fidelity_matches_float64_reference(tiny_model_dir, mode):
    model, tok = load_causal_lm(str(tiny_model_dir))
    cfg = ScanConfig(formats=("nvfp4",), mode=mode, samples=5, max_tokens=24, batch_size=2)
    doc = scan_model(model, tok, cfg, model_info={}, progress=False)[0]
    quantized, _ = load_causal_lm(str(tiny_model_dir))
    quantize_linears(quantized, LinearQuantConfig("nvfp4"))
    want = _reference(_logit_pairs(model, quantized, tok, cfg))
    assert 0 < want["kl_mean"] and want["top1_agreement"] < 1  # the test can tell a damaged model apart
    _check(doc["fidelity"], want)
    assert doc["fidelity"]["quantized"] == "nvfp4/w4a4" and "sensitivity" not in doc


def test_sensitivity_matches_one_layer_quantized(tiny_model_dir):
    model, tok = load_causal_lm(str(tiny_model_dir))
    cfg = ScanConfig(formats=("mxfp4",), samples=4, max_tokens=20, batch_size=3, sensitivity=True)
    doc = scan_model(model, tok, cfg, model_info={}, progress=False)[0]
    for index, layer in enumerate(doc["layers"]):
        alone, _ = load_causal_lm(str(tiny_model_dir))
        quantize_linears(alone, LinearQuantConfig("mxfp4", exclude=_only_layer(index)))
        want = _reference(_logit_pairs(model, alone, tok, cfg))
        _check(layer["sensitivity"], want)
    assert doc["sensitivity"]["rank_correlation"]["sqnr_db"]["n"] == len(doc["layers"])


def test_identity_format_does_no_damage(tiny_model_dir):
    model, tok = load_causal_lm(str(tiny_model_dir))
    cfg = ScanConfig(formats=("none",), mode="propagated", samples=3, max_tokens=16, sensitivity=True)
    doc = scan_model(model, tok, cfg, model_info={}, progress=False)[0]
    assert doc["fidelity"]["kl_max"] == 0 and doc["fidelity"]["top1_agreement"] == 1
    assert doc["fidelity"]["perplexity_ratio"] == 1
    assert [layer["sensitivity"]["kl_max"] for layer in doc["layers"]] == [0.0] * len(doc["layers"])
    # nothing varies, so nothing is ranked
    assert {c["rho"] for c in doc["sensitivity"]["rank_correlation"].values()} == {None}


def test_a_layer_whose_quantization_is_exact_has_zero_sensitivity(tiny_model_dir):
    """Zero weights quantize exactly and make the activations' rounding irrelevant: under MXFP4 that layer,
    and only it, does no damage."""
    model, tok = load_causal_lm(str(tiny_model_dir))
    with torch.no_grad():
        for linear in (m for m in decoder_layers(model)[1].modules() if isinstance(m, torch.nn.Linear)):
            linear.weight.zero_()
    cfg = ScanConfig(formats=("mxfp4",), samples=3, max_tokens=16, sensitivity=True)
    doc = scan_model(model, tok, cfg, model_info={}, progress=False)[0]
    sens = [layer["sensitivity"]["kl_mean"] for layer in doc["layers"]]
    assert sens[1] == 0 and sens[0] > 0 and sens[2] > 0
    assert doc["layers"][1]["sensitivity"]["top1_agreement"] == 1


def test_rank_correlation_sign_follows_damage():
    """A positive rho means the metric's worse layers are the damaging ones, SQNR (higher is better) included."""
    sqnr = [20.0, 18.0, 15.0, 12.0]
    layers = [{"primary": {"relative_error": 0.1 * (i + 1), "deadzone_ratio": 0.3 - 0.05 * i, "sqnr_db": s},
               "sensitivity": {"kl_mean": 0.01 * (i + 1) ** 2}} for i, s in enumerate(sqnr)]
    corr = rank_correlations({"layers": layers})
    assert corr["relative_error"]["rho"] == pytest.approx(1.0)
    assert corr["sqnr_db"]["rho"] == pytest.approx(1.0)
    assert corr["deadzone_ratio"]["rho"] == pytest.approx(-1.0)
    assert rank_correlations({"layers": [{"primary": layers[0]["primary"]}]}) is None


def test_a_quantized_policy_is_measured_under_its_own_quantization(tiny_model_dir):
    """rin_train rescans a policy whose linears are already quantized (and switched off): the fidelity is that
    policy's, the switches are left as found, and another format is refused rather than mislabelled."""
    from srdd.errors import SrddError
    from srdd.qlinear import quantization_disabled, quantized_modules

    model, tok = load_causal_lm(str(tiny_model_dir))
    quantize_linears(model, LinearQuantConfig("nvfp4", mode="w4a16"))
    cfg = ScanConfig(formats=("nvfp4",), samples=2, max_tokens=12)
    with quantization_disabled(model):
        doc = scan_model(model, tok, cfg, model_info={}, progress=False)[0]
        assert not any(m.quant_enabled for _, m in quantized_modules(model))
        with pytest.raises(SrddError, match="already quantized under nvfp4/w4a16"):
            scan_model(model, tok, ScanConfig(formats=("mxfp4",), samples=2, max_tokens=12), model_info={},
                       progress=False)
    assert doc["fidelity"]["quantized"] == "nvfp4/w4a16" and doc["fidelity"]["kl_mean"] > 0
    assert all(m.quant_enabled for _, m in quantized_modules(model))


def test_statistics_are_computed_in_chunks_of_bounded_size_and_sum_to_the_whole(monkeypatch):
    import srdd.scan.fidelity as fidelity

    g = torch.Generator().manual_seed(0)
    ref, quant = torch.randn(100, 512, generator=g), torch.randn(100, 512, generator=g)
    targets = torch.randint(0, 512, (100,), generator=g)
    whole = fidelity._chunk(ref.double(), quant.double(), targets)
    sizes = []
    real_chunk = fidelity._chunk
    monkeypatch.setattr(fidelity, "_chunk", lambda r, q, t: sizes.append(r.shape[0]) or real_chunk(r, q, t))
    monkeypatch.setattr(fidelity, "CHUNK_BYTES", 8 * 512 * 16)  # 16 rows of float64
    out = fidelity.output_stats(ref, quant, targets)
    assert sizes == [16] * 6 + [4]
    assert fidelity.rows_per_chunk(49152) * 49152 * 8 <= 1 << 24  # SmolLM2's vocabulary: 16 MB a tensor
    assert (out.tokens, out.top1_same) == (whole.tokens, whole.top1_same)
    for name in ("sum_kl", "sum_nll_fp", "sum_nll_q"):
        assert getattr(out, name) == pytest.approx(getattr(whole, name), rel=1e-12)
    assert np.array_equal(out.kl(), whole.kl())
