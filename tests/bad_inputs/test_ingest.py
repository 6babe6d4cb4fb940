"""`srdd ingest verl` refuses bad logs, configs and scans in one line, before the run directory exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parents[1] / "rin_train" / "verl" / "fixtures"
ACC = "val-core/openai/gsm8k/acc/mean@1"


def _jsonl(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


LOG_CASES = [
    ("console.log", f"step:0 - {ACC}:nan - critic/score/mean:0.1\n", f"{ACC} is nan, not a finite number"),
    ("console.log", f"step:0 - {ACC}:56.41\n", "accuracies are fractions 0..1 (a percentage?)"),
    ("console.log", f"step:0 - {ACC}:-3\n", f"{ACC} is -3.0; accuracies are fractions"),
    ("console.log", "step:0 - critic/score/mean:inf\n", "critic/score/mean is inf"),
    ("console.log", "step:0 - noise/sigma:-0.5\n", "a noise sigma cannot be negative"),
    ("console.log", "no step lines here\n", "no verl step lines found"),
    ("m.jsonl", _jsonl('{"step": 0, "data": {"' + ACC + '": NaN}}'), f"{ACC} is nan"),
    ("m.jsonl", _jsonl({"step": -1, "data": {ACC: 0.5}}), "step -1 is not in 0.."),
    ("m.jsonl", _jsonl({"step": "3", "data": {}}), "a verl file-logger line is"),
    ("m.jsonl", _jsonl({"step": 0, "data": [1, 2]}), "a verl file-logger line is"),
    ("m.jsonl", _jsonl({"step": 0, "data": {ACC: "high"}}), f"{ACC} is 'high', not a finite number"),
    ("m.jsonl", _jsonl({"step": 10**12, "data": {}}), "is not in 0..1000000000"),
    ("m.jsonl", _jsonl({"step": 0, "data": {}}, "{not json"), "not a verl file-logger line"),
]


@pytest.mark.parametrize("name,text,expect", LOG_CASES, ids=[c[2][:40] for c in LOG_CASES])
def test_ingest_refuses_bad_logs(tmp_path, refused, name, text, expect):
    (tmp_path / name).write_text(text)
    refused(["ingest", "verl", tmp_path / name, "-o", tmp_path / "run", "--quant", "mxfp4/w4a4",
             "--config", FIXTURES / "verl_run.yaml"], tmp_path, expect)


CONFIG_CASES = [
    ("noise: {enabled: true, sigma_start: .nan}\n", "--config", "noise.sigma_start: nan is not a finite number"),
    ("noise: {enabled: true}\nstarted: 2026-11-29\n", "--config", "started: date value"),
    ("noise: [1\n", "--config", "is not valid YAML"),
    ("noise: {enabled: yes-ish}\n", "--config", "the noise settings of the verl run are unknown"),
    ("noise: {enabled: true}\n1: x\n", "--config", "key 1 is not a string"),
]


@pytest.mark.parametrize("text,flag,expect", CONFIG_CASES, ids=[c[2][:40] for c in CONFIG_CASES])
def test_ingest_refuses_bad_configs(tmp_path, refused, text, flag, expect):
    (tmp_path / "c.yaml").write_text(text)
    refused(["ingest", "verl", FIXTURES / "verl_console.log", "-o", tmp_path / "run", "--quant", "mxfp4/w4a4",
             "--config", tmp_path / "c.yaml"], tmp_path, expect)


def _scan(n=3):
    return {"schema": "srdd.scan/v1", "model": {"name": "tiny", "num_layers": n}, "format": {"name": "mxfp4"},
            "layers": [{"layer": i, "block_output": {"relative_error": 0.3, "deadzone_ratio": 0.2, "sqnr_db": 17.0}}
                       for i in range(n)]}


SCAN_CASES = [
    ('"just a string"', "expected a JSON object, got str"),
    (json.dumps({**_scan(), "layers": "abc"}), "layers: Input should be a valid list"),
    (json.dumps(_scan()).replace("17.0", "NaN", 1), "layers[0].block_output.sqnr_db: Input should be a finite number"),
    (json.dumps({**_scan(), "schema": "srdd.noise/v1"}), "is not a srdd.scan/v1 file"),
    (json.dumps({**_scan(), "model": {"name": "tiny", "num_layers": 10**12}}), "model.num_layers"),
    (json.dumps({**_scan(1), "layers": [{"layer": 0}]}), "every layer needs block_output metrics"),
]


@pytest.mark.parametrize("text,expect", SCAN_CASES, ids=[c[1][:40] for c in SCAN_CASES])
def test_ingest_refuses_bad_scans(tmp_path, refused, text, expect):
    (tmp_path / "scan.json").write_text(text)
    refused(["ingest", "verl", FIXTURES / "verl_console.log", "-o", tmp_path / "run", "--quant", "mxfp4/w4a4",
             "--config", FIXTURES / "verl_run.yaml", "--scan-before", tmp_path / "scan.json"], tmp_path, expect)


@pytest.mark.parametrize("extra,expect", [
    (["--quant", "MXFP4 W4A4"], "--quant must look like 'mxfp4/w4a4'"),
    (["--quant", "mxfp4/w4a4", "--seed", "-1"], "--seed must be in 0..4294967295"),
    (["--quant", "mxfp4/w4a4", "--seed", "99999999999"], "--seed must be in 0..4294967295"),
], ids=["quant", "negative-seed", "huge-seed"])
def test_ingest_refuses_bad_options(tmp_path, refused, extra, expect):
    refused(["ingest", "verl", FIXTURES / "verl_console.log", "-o", tmp_path / "run",
             "--config", FIXTURES / "verl_run.yaml", *extra], tmp_path, expect)


def test_ingest_refuses_an_existing_run_through_the_executable(tmp_path, refused):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    refused(["ingest", "verl", FIXTURES / "verl_console.log", "-o", "run", "--quant", "mxfp4/w4a4",
             "--config", FIXTURES / "verl_run.yaml"], tmp_path, "already exists", subprocess_run=True)


def test_ingest_refuses_a_missing_log(tmp_path, refused):
    refused(["ingest", "verl", tmp_path / "none.log", "-o", tmp_path / "run", "--quant", "mxfp4/w4a4",
             "--config", FIXTURES / "verl_run.yaml"], tmp_path, "does not exist")
