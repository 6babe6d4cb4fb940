"""Scanner metrics against an independent reference: capture tensors, quantize, float64 sums."""

import math

import pytest
import torch

from srdd.calibration_prompts import load_samples, tokenize
from srdd.formats import fake_quantize
from srdd.models import decoder_layers, load_causal_lm, model_info, resolve_model
from srdd.qlinear import LinearQuantConfig, quantize_linears
from srdd.scan.runner import ScanConfig, batches, scan_model

KEYS = ("relative_error", "deadzone_ratio", "sqnr_db", "mse", "numel", "nonzero")


def _reference(x: torch.Tensor, q: torch.Tensor) -> dict:
    x, q = x.double().reshape(-1), q.double().reshape(-1)
    nz = x != 0
    err = q - x
    return {"relative_error": float((err[nz].abs() / x[nz].abs()).mean()),
            "deadzone_ratio": float((q[nz] == 0).double().mean()),
            "sqnr_db": 10 * math.log10(float((x * x).sum()) / float((err * err).sum())),
            "mse": float((err * err).mean()), "numel": x.numel(), "nonzero": int(nz.sum())}


def _close(got: dict, want: dict) -> None:
    for k in KEYS:
        assert got[k] == pytest.approx(want[k], rel=1e-9), k


def _valid_batches(tokenizer, cfg):
    ids = tokenize(load_samples(None, cfg.samples, cfg.seed), tokenizer, cfg.max_tokens)
    return list(batches(ids, cfg.batch_size, tokenizer.pad_token_id))


def test_isolated_matches_reference_every_site(tiny_model_dir):
    model, tok = load_causal_lm(str(tiny_model_dir))
    cfg = ScanConfig(formats=("mxfp4",), sites=("block_output", "linear_input", "weight"),
                     samples=5, max_tokens=24, batch_size=2)
    doc = scan_model(model, tok, cfg, model_info=model_info(model, resolve_model(str(tiny_model_dir))), progress=False)[0]
    layers = decoder_layers(model)
    captured: dict[tuple, list] = {}

    def keep(key):
        def hook(m, args, out=None):
            t = out[0] if out is not None and isinstance(out, tuple) else (out if out is not None else args[0])
            captured.setdefault(key, []).append(t.detach())
        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.register_forward_hook(keep((i, "block"))))
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(keep((i, "o_proj"))))
    masks = []
    with torch.no_grad():
        for input_ids, mask in _valid_batches(tok, cfg):
            model(input_ids=input_ids, attention_mask=mask)
            masks.append(mask.reshape(-1).bool())
    for h in handles:
        h.remove()
    for i, entry in enumerate(doc["layers"]):
        for site, key in (("block_output", "block"), ("o_proj", "o_proj")):
            rows = torch.cat([t.reshape(-1, t.shape[-1])[m] for t, m in zip(captured[(i, key)], masks)])
            got = entry["block_output"] if site == "block_output" else entry["linear_inputs"]["self_attn.o_proj"]
            _close(got, _reference(rows, fake_quantize(rows, "mxfp4")))
        w = layers[i].mlp.down_proj.weight.detach()
        _close(entry["weights"]["mlp.down_proj"], _reference(w, fake_quantize(w, "mxfp4")))


def test_propagated_matches_reference(tiny_model_dir):
    model, tok = load_causal_lm(str(tiny_model_dir))
    cfg = ScanConfig(formats=("nvfp4",), sites=("block_output",), mode="propagated",
                     samples=4, max_tokens=20, batch_size=4)
    doc = scan_model(model, tok, cfg, model_info=model_info(model, resolve_model(str(tiny_model_dir))), progress=False)[0]
    ref_model, _ = load_causal_lm(str(tiny_model_dir))
    quantized, _ = load_causal_lm(str(tiny_model_dir))
    quantize_linears(quantized, LinearQuantConfig("nvfp4"))
    outs = {}
    for name, m in (("x", ref_model), ("q", quantized)):
        for i, layer in enumerate(decoder_layers(m)):
            layer.register_forward_hook(lambda mod, a, o, i=i, name=name: outs.setdefault((name, i), []).append(o[0] if isinstance(o, tuple) else o))
    masks = []
    with torch.no_grad():
        for input_ids, mask in _valid_batches(tok, cfg):
            ref_model(input_ids=input_ids, attention_mask=mask)
            quantized(input_ids=input_ids, attention_mask=mask)
            masks.append(mask.reshape(-1).bool())
    for i, entry in enumerate(doc["layers"]):
        x = torch.cat([t.reshape(-1, t.shape[-1])[m] for t, m in zip(outs[("x", i)], masks)])
        q = torch.cat([t.reshape(-1, t.shape[-1])[m] for t, m in zip(outs[("q", i)], masks)])
        _close(entry["block_output"], _reference(x, q))
    assert doc["mode"] == "propagated"


def test_padding_never_counts(tiny_model_dir):
    model, tok = load_causal_lm(str(tiny_model_dir))
    one = ScanConfig(samples=4, max_tokens=30, batch_size=1)
    four = ScanConfig(samples=4, max_tokens=30, batch_size=4)
    a = scan_model(model, tok, one, model_info={}, progress=False)[0]
    b = scan_model(model, tok, four, model_info={}, progress=False)[0]
    for la, lb in zip(a["layers"], b["layers"]):
        assert la["block_output"]["numel"] == lb["block_output"]["numel"]
        assert la["block_output"]["sqnr_db"] == pytest.approx(lb["block_output"]["sqnr_db"], rel=1e-4)
