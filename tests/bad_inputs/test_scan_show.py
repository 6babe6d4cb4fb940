"""`srdd scan` and `srdd show` refuse bad input in one line, before any output exists."""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

import pytest

from srdd.cli import main


SCAN_CASES = [
    (["--fmt", "mxfp4,mxfp4"], "names a format twice"),
    (["--fmt", "mxfp4", "--group-size", "32"], "--group-size does not apply to mxfp4"),
    (["--fmt", "nvfp4", "--scale-mode", "rceil"], "--scale-mode does not apply to nvfp4"),
    (["--fmt", "mxfp4", "--no-per-tensor-scale"], "--no-per-tensor-scale does not apply to mxfp4"),
    (["--fmt", "mxfp4", "--samples", "1000000000"], "--samples must be in 1..65536"),
    (["--fmt", "mxfp4", "--samples", "0"], "--samples must be in 1.."),
    (["--fmt", "mxfp4", "--max-tokens", "0"], "--max-tokens must be in 1.."),
    (["--fmt", "mxfp4", "--batch-size", "100000"], "--batch-size must be in 1..4096"),
    (["--fmt", "nosuch"], "unknown format 'nosuch'"),
    (["--fmt", "mxfp4", "--sites", "nowhere"], "unknown site(s) ['nowhere']"),
    (["--fmt", "mxfp4", "--device", "foo"], "--device must be cpu, cuda or cuda:N"),
    (["--fmt", "mxfp4", "--data", "missing.jsonl"], "data file missing.jsonl does not exist"),
    (["--fmt", "mxfp4", "--model", "nosuch-model"], "model 'nosuch-model' not found"),
    (["--fmt", "mxfp4", "--model", "EMPTY_GGUF"], "not a GGUF file"),
    (["--fmt", "mxfp4", "--model", "RANDOM_GGUF"], "not a GGUF file"),
    (["--fmt", "mxfp4", "--model", "NOCONFIG"], "no config.json"),
    (["--fmt", "mxfp4", "--model", "HUGE_COUNT_GGUF"], "is truncated or inconsistent"),
    (["--fmt", "mxfp4", "--model", "CUT_GGUF"], "is truncated or inconsistent"),
    (["--fmt", "mxfp4", "--out", "EXISTING"], "already exists; pass --force"),
    (["--fmt", "mxfp4", "--out", "nodir/scan.json"], "does not exist"),
    (["--fmt", "int4", "--group-size", "-3"], "group"),
    (["--fmt", "mxfp4", "--model", "Qwen/Qwen2.5-7B", "--revision", "main;touch pwned"], "--revision 'main;touch"),
    (["--fmt", "mxfp4", "--model", "Qwen/Qwen2.5-7B", "--revision", ""], "--revision '': expected a branch"),
    (["--fmt", "mxfp4", "--model", "Qwen/Qwen2.5-7B", "--revision=-bad"], "expected a branch, tag or commit"),
]


@pytest.mark.parametrize("extra,expect", SCAN_CASES, ids=[c[1][:40] for c in SCAN_CASES])
def test_scan_refuses(tmp_path, monkeypatch, refused, tiny_model_dir, extra, expect):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.gguf").write_bytes(b"")
    (tmp_path / "random.gguf").write_bytes(bytes(range(256)) * 16)
    (tmp_path / "huge.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2**62, 1) + b"\x05" + b"\x00" * 7 + b"abcde")
    (tmp_path / "cut.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + b"\x05\x00\x00")
    (tmp_path / "noconfig").mkdir()
    (tmp_path / "existing.json").write_text("keep me")
    subs = {"EMPTY_GGUF": "empty.gguf", "RANDOM_GGUF": "random.gguf", "NOCONFIG": "noconfig",
            "HUGE_COUNT_GGUF": "huge.gguf", "CUT_GGUF": "cut.gguf",
            "EXISTING": "existing.json"}
    extra = [subs.get(a, a) for a in extra]
    argv = ["scan", *extra]
    if "--model" not in extra:
        argv += ["--model", str(tiny_model_dir)]
    if "--out" not in extra:
        argv += ["--out", "scan.json"]
    refused(argv, tmp_path, expect)


def test_the_fetch_command_is_quoted_for_a_shell():
    from srdd.hub import fetch_command

    assert fetch_command("Qwen/Qwen2.5-7B", "refs/pr/1").endswith("--revision refs/pr/1")
    assert "'*.json'" in fetch_command("Qwen/Qwen2.5-7B", None)
    assert fetch_command("Qwen/x y", None).startswith("hf download 'Qwen/x y' ")


def test_scan_refusal_through_the_executable(tmp_path, refused, tiny_model_dir):
    refused(["scan", "--fmt", "mxfp4,mxfp4", "--model", tiny_model_dir, "--out", "s.json"], tmp_path,
            "names a format twice", subprocess_run=True)


def _set(doc: dict, path: str, value) -> dict:
    doc = copy.deepcopy(doc)
    node = doc
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    for k in keys[:-1]:
        node = node[k]
    if value is KeyError:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return doc


SHOW_CASES = [
    ("summary", None, "summary"),
    ("layers", "abc", "layers"),
    ("layers", [], "layers"),
    ("schema", "srdd.scan/v2", "not a srdd.scan/v1 file"),
    ("summary.sqnr_db", KeyError, "summary lacks ['sqnr_db']"),
    ("summary.sqnr_db.mean", "high", "summary.sqnr_db.mean"),
    ("layers.0.primary.deadzone_ratio", 1.5, "layers[0].primary.deadzone_ratio"),
    ("layers.0.primary.relative_error", -0.1, "layers[0].primary.relative_error"),
    ("layers.0.primary", KeyError, "every layer needs its 'primary' metrics"),
    ("layers.0.layer", 7, "layer ids must be 0.."),
    ("layers.1.layer", "one", "layers[1].layer"),
    ("model.num_layers", 10**12, "model.num_layers"),
    ("model.num_layers", 2, "model.num_layers is 2 but the file has 3 layers"),
    ("zones.0.layers", [], "zones[0].layers"),
    ("zones.0.kind", "weird", "zones[0].kind"),
    ("worst_layers.0.sqnr_db", KeyError, "worst_layers[0].sqnr_db"),
    ("calibration", KeyError, "calibration"),
    ("mode", "sideways", "mode"),
    ("model", "tiny", "model"),
    ("layers.0.linear_inputs", {"q": "bad"}, "layers[0].linear_inputs.q"),
    ("warnings", "oops", "warnings"),
    ("fidelity.top1_agreement", 1.5, "fidelity.top1_agreement"),
    ("fidelity.kl_mean", -0.1, "fidelity.kl_mean"),
    ("fidelity.kl_p99", KeyError, "tokens were scored but ['kl_p99'] are missing"),
    ("fidelity.perplexity_ratio", 0.0, "fidelity.perplexity_ratio"),
    ("fidelity.quantized", KeyError, "fidelity.quantized"),
    ("sensitivity", {"metric": "kl_mean", "quantized": "mxfp4/w4a4"}, "have no sensitivity.kl_mean"),
    ("layers.0.sensitivity", {"tokens": 3, "kl_mean": 0.1}, "layers[0].sensitivity: 3 tokens were scored"),
]


@pytest.mark.parametrize("field,value,expect", SHOW_CASES, ids=[f"{c[0]}={c[1]!r}"[:40] for c in SHOW_CASES])
def test_show_refuses_malformed_scans(tmp_path, refused, scan_doc, field, value, expect):
    path = tmp_path / "scan.json"
    path.write_text(json.dumps(_set(scan_doc, field, value)))
    refused(["show", path, "--csv", tmp_path / "out.csv", "--plot", tmp_path / "out.png"], tmp_path, expect)


@pytest.mark.parametrize("text,expect", [
    ("not json", "is not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ("NAN_TOKEN", "layers[0].primary.sqnr_db: Input should be a finite number"),
    ("NAN_KL", "fidelity.kl_max: Input should be a finite number"),
], ids=["not-json", "list", "nan-token", "nan-kl"])
def test_show_refuses_bad_json(tmp_path, refused, scan_doc, text, expect):
    if text == "NAN_TOKEN":
        text = json.dumps(_set(scan_doc, "layers.0.primary.sqnr_db", float("nan")))
    if text == "NAN_KL":
        text = json.dumps(_set(scan_doc, "fidelity.kl_max", float("inf")))
    (tmp_path / "scan.json").write_text(text)
    refused(["show", tmp_path / "scan.json"], tmp_path, expect)


def test_show_refuses_sensitivity_zones_without_sensitivity(tmp_path, refused, scan_doc):
    (tmp_path / "scan.json").write_text(json.dumps(scan_doc))
    refused(["show", tmp_path / "scan.json", "--zone-metric", "sensitivity", "--csv", tmp_path / "out.csv"],
            tmp_path, "--zone-metric sensitivity: this scan has no per-layer sensitivity")


def test_show_refuses_an_existing_csv_through_the_executable(tmp_path, refused, scan_doc):
    (tmp_path / "scan.json").write_text(json.dumps(scan_doc))
    (tmp_path / "layers.csv").write_text("mine")
    refused(["show", "scan.json", "--csv", "layers.csv"], tmp_path, "already exists; pass --force",
            subprocess_run=True)


def test_show_renders_the_valid_scan(tmp_path, scan_doc, capsys):
    (tmp_path / "scan.json").write_text(json.dumps(scan_doc))
    assert main(["show", str(tmp_path / "scan.json")]) == 0  # the schema accepts what srdd scan writes
    assert "Worst layers" in capsys.readouterr().out


@pytest.mark.parametrize("damage,expect", [
    ("truncate", "is truncated or corrupt"),
    ("pickle_only", "holds its weights only as a pickle checkpoint"),
    ("pickle_beside_other", "holds its weights only as a pickle checkpoint"),
    ("index_outside", "lies outside the model directory"),
    ("index_no_map", "has no 'weight_map'"),
    ("header_types", "has no valid dtype and shape"),
    ("header_list", "safetensors header is not a JSON object"),
], ids=["truncated-safetensors", "pickle-bin", "pickle-beside-adapter", "index-escapes", "index-no-weight-map",
        "header-wrong-types", "header-not-object"])
def test_scan_refuses_damaged_model_files(tmp_path, refused, tiny_model_dir, damage, expect):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = next(model.glob("*.safetensors"))
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage.startswith("pickle"):
        weights.rename(model / "adapter.safetensors") if damage == "pickle_beside_other" else weights.unlink()
        (model / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle: never unpickled
    elif damage.startswith("index"):
        weight_map = {"lm_head.weight": "../../../../etc/passwd"} if damage == "index_outside" else None
        (model / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    else:
        header = json.dumps([1] if damage == "header_list" else {"w": {"dtype": 5, "shape": "ab",
                                                                            "data_offsets": [0, 0]}}).encode()
        weights.write_bytes(len(header).to_bytes(8, "little") + header)
    refused(["scan", "--fmt", "mxfp4", "--model", model, "--out", tmp_path / "scan.json"], tmp_path, expect)
