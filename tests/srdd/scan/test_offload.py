"""Offload: decided from the safetensors headers, identical results in both modes, the mission command."""

import json
import subprocess

import pytest
import torch

from srdd.models import load_causal_lm, model_info, resolve_model
from srdd.scan.memory import FIT_FRACTION, decide_offload
from srdd.scan.offload import load_offloaded
from srdd.scan.runner import ScanConfig, scan_model
from srdd.weights import parameter_count
from tests.conftest import QWEN_COMMIT, QWEN_REPO

SITES = ("block_output", "linear_input", "weight")


def test_estimate_reads_headers_only(tiny_model_dir):
    model, _ = load_causal_lm(str(tiny_model_dir))
    assert parameter_count(tiny_model_dir) == sum(p.numel() for p in model.parameters())


def test_decision_follows_the_limit_and_dtype(tiny_model_dir):
    need32 = parameter_count(tiny_model_dir) * 4
    limit = int(need32 / FIT_FRACTION)
    fits = decide_offload(tiny_model_dir, torch.float32, "cpu", force=None, limit_bytes=limit + 1)
    assert not fits.offload and fits.needed_bytes == need32
    assert decide_offload(tiny_model_dir, torch.float32, "cpu", force=None, limit_bytes=limit - 1).offload
    assert not decide_offload(tiny_model_dir, torch.bfloat16, "cpu", force=None, limit_bytes=limit - 1).offload
    assert decide_offload(tiny_model_dir, torch.float32, "cpu", force=True).offload
    assert not decide_offload(tiny_model_dir, torch.float32, "cpu", force=False, limit_bytes=1).offload


def _devices():
    cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    return ["cpu", pytest.param("cuda", marks=cuda)]


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("mode", ["propagated", "isolated"])
def test_offload_is_bit_for_bit_the_same_scan(offline_hub, mode, device):
    source = resolve_model("Qwen2.5-7B")
    cfg = ScanConfig(formats=("mxfp4", "nvfp4"), sites=SITES, mode=mode, samples=3, max_tokens=16, batch_size=2,
                     sensitivity=True)
    docs = {}
    for offload in (False, True):
        loader = load_offloaded if offload else load_causal_lm
        model, tok = loader(source, device=device)
        docs[offload] = scan_model(model, tok, cfg, model_info=model_info(model, source), progress=False)
        if offload:
            assert all(p.is_meta for p in model.model.layers.parameters())  # every layer released again
    for plain, offloaded in zip(docs[False], docs[True]):
        assert plain["layers"] == offloaded["layers"]  # per-layer sensitivity included
        assert plain["fidelity"] == offloaded["fidelity"] and plain["fidelity"]["kl_mean"] > 0
        assert plain["layers"][0]["sensitivity"]["kl_mean"] > 0
        assert plain["layers"][0]["weights"]["self_attn.q_proj"]["numel"] > 0


def _srdd(*args, env=None):
    return subprocess.run(["srdd", *map(str, args)], capture_output=True, text=True, timeout=300, env=env)


def test_mission_command_offloads_by_itself_and_records_the_revision(offline_hub, tmp_path):
    out = tmp_path / "scan.json"
    r = _srdd("scan", "--fmt", "mxfp4", "--model", "Qwen2.5-7B", "--out", out, "--samples", "2",
              "--max-tokens", "12", "--max-memory", "0.0001")
    assert r.returncode == 0, r.stderr
    offload_lines = [line for line in r.stderr.splitlines() if "offloading layer by layer" in line]
    assert len(offload_lines) == 1 and "--no-offload" in offload_lines[0]
    assert "scanning (offloaded)" in r.stderr and "layer" in r.stderr  # per-layer progress
    doc = json.loads(out.read_text())
    assert doc["model"]["repo_id"] == QWEN_REPO and doc["model"]["revision"] == QWEN_COMMIT
    assert doc["model"]["spec"] == "Qwen2.5-7B" and doc["model"]["architecture"] == "Qwen2ForCausalLM"
    assert doc["provenance"]["offload"]["enabled"] is True
    assert doc["provenance"]["command"][-2:] == ["--max-memory", "0.0001"]


def test_offline_miss_is_one_clean_error(offline_hub, tmp_path):
    r = _srdd("scan", "--fmt", "mxfp4", "--model", "Qwen2.5-1.5B", "--out", tmp_path / "s.json")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("srdd scan: error: model 'Qwen2.5-1.5B': Qwen/Qwen2.5-1.5B")
    assert "fetch it with `hf download Qwen/Qwen2.5-1.5B " in r.stderr and ":;" not in r.stderr
    assert len(r.stderr.splitlines()) == 1 and not (tmp_path / "s.json").exists()
