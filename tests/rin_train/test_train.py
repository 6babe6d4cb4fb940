"""Whole runs through `srdd train` and run_training, on the tiny smoke preset (seconds each)."""

import json
import subprocess

import pytest
import torch

import rin_train.engine_trl as engine
from rin_train.presets import preset
from rin_train.run_config import load_run_config
from rin_train.rundir import RunDir
from rin_train.train import run_training
from srdd.errors import SrddError


def srdd(*args):
    return subprocess.run(["srdd", *map(str, args)], capture_output=True, text=True, timeout=600)


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_smoke_run_through_the_cli(tmp_path):
    out = tmp_path / "runs" / "smoke"
    r = srdd("train", "--preset", "smoke", "--out", out, "--set", "noise.layer_multipliers={0: 2.0, 1: 0.0}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "quantized 21 linear modules under mxfp4/w4a4" in r.stdout
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "complete" and info["config"]["seed"] == 0
    assert info["config"]["quant"]["format"] == "mxfp4" and info["config"]["noise"]["enabled"] is True
    records = _records(out)
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert records[0]["accuracy"] is not None and records[-1]["accuracy"] is not None
    assert all(r["eval_quant"] == "mxfp4/w4a4" for r in records if r["accuracy"] is not None)
    for r in records[1:]:  # per-layer multipliers reached the perturbed modules (lesson 1)
        assert r["sigma_layers"]["0"] / r["sigma"] == pytest.approx(2.0, rel=0.05)
        assert r["sigma_layers"]["1"] == 0.0
        assert r["sigma_layers"]["2"] / r["sigma"] == pytest.approx(1.0, rel=0.05)
        assert r["zero_variance_groups"] <= r["groups"]
    for which in ("before", "after"):
        assert json.loads((out / f"scan_{which}.json").read_text())["schema"] == "srdd.scan/v1"
    again = srdd("train", "--preset", "smoke", "--out", out)
    assert again.returncode != 0 and "never overwritten" in again.stderr


def test_validation_sees_clean_weights(tmp_path, monkeypatch):
    seen = []
    original = engine.evaluate

    def checking_evaluate(model, tokenizer, examples, **kw):
        from srdd.models import decoder_layers

        norm = decoder_layers(model)[0].input_layernorm.weight
        seen.append(bool(torch.all(norm == 1.0)))  # RMSNorm weights are exactly 1.0 when clean
        return original(model, tokenizer, examples, **kw)

    monkeypatch.setattr(engine, "evaluate", checking_evaluate)
    cfg = load_run_config(None, preset=preset("smoke"), sets=["noise.targets=[rmsnorm]"])
    run_training(cfg, tmp_path / "run")
    assert seen and all(seen)


def test_run_without_final_validation_is_not_complete(tmp_path, monkeypatch):
    monkeypatch.setattr(engine.RunLogger, "on_step_end", lambda self, *a, **k: None)  # evaluations skipped
    cfg = load_run_config(None, preset=preset("smoke"))
    run = run_training(cfg, tmp_path / "run")
    info = run.info()
    assert info["status"] == "invalid" and "final step was not validated" in info["reason"]


def test_a_crash_marks_the_run_failed(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr("rin_train.train.train_grpo", boom)
    with pytest.raises(RuntimeError):
        run_training(load_run_config(None, preset=preset("smoke")), tmp_path / "run")
    info = RunDir(tmp_path / "run").info()
    assert info["status"] == "failed" and "simulated crash" in info["reason"]


def test_watchdog_ends_a_stalled_run_as_failed(tmp_path):
    script = (
        "import time, rin_train.engine_trl as e\n"
        "orig = e.RunLogger.on_step_end\n"
        "def slow(self, args, state, *a, **k):\n"
        "    if state.global_step == 2: time.sleep(30)\n"
        "    return orig(self, args, state, *a, **k)\n"
        "e.RunLogger.on_step_end = slow\n"
        "from srdd.cli import main\n"
        f"main(['train', '--preset', 'smoke', '--out', '{tmp_path / 'run'}', '--set', 'grpo.stall_timeout_s=3'])\n"
    )
    r = subprocess.run(["python", "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 3
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["status"] == "failed" and "watchdog" in info["reason"]
    assert [rec["step"] for rec in _records(tmp_path / "run")][:2] == [0, 1]


def test_resume_keeps_logged_steps(tmp_path):
    out = tmp_path / "run"
    script = (
        "import os, rin_train.engine_trl as e\n"
        "orig = e.RunLogger.on_log\n"
        "def dying(self, args, state, *a, **k):\n"
        "    orig(self, args, state, *a, **k)\n"
        "    if state.global_step == 2: os._exit(9)\n"
        "e.RunLogger.on_log = dying\n"
        "from srdd.cli import main\n"
        f"main(['train', '--preset', 'smoke', '--out', '{out}'])\n"
    )
    assert subprocess.run(["python", "-c", script], capture_output=True, timeout=300).returncode == 9
    assert [r["step"] for r in _records(out)] == [0, 1, 2]
    r = srdd("train", "--resume", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [r["step"] for r in _records(out)] == [0, 1, 2, 3]
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("sets,message", [
    (["bogus=1"], "unknown key(s) ['bogus']"),
    (["noise.sigma_start=0.001", "noise.sigma_end=0.01"], "sigma_end 0.01 > sigma_start 0.001"),
    (["noise.sigma_start=-1"], ">= 0"),
    (["grpo.stepz=3"], "grpo: unknown key(s) ['stepz']"),
])
def test_bad_configs_fail_before_training(tmp_path, sets, message):
    args = ["train", "--preset", "smoke", "--out", tmp_path / "run"]
    for s in sets:
        args += ["--set", s]
    r = srdd(*args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_multipliers_for_missing_layers_fail_before_training(tmp_path):
    r = srdd("train", "--preset", "smoke", "--out", tmp_path / "run", "--set", "noise.layer_multipliers={9: 1.0}")
    assert r.returncode != 0 and "layers [9]" in r.stderr
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"


def test_suite_configs_from_calibrate_load(tmp_path):
    from tests.calibrate.conftest import srdd_doc

    scan = tmp_path / "scan.json"
    scan.write_text(json.dumps(srdd_doc()))
    assert srdd("calibrate", scan, "-o", tmp_path / "m.yaml", "--suite", tmp_path / "suite").returncode == 0
    for path in sorted((tmp_path / "suite").glob("*.yaml")):
        cfg = load_run_config(path)
        assert cfg.name == path.stem
    variable = load_run_config(tmp_path / "suite" / "E13j-variable.yaml")
    assert variable.noise.layer_multipliers[15] == 1.17
    with pytest.raises(SrddError):
        load_run_config({"noise": {"layer_multipliers": {0: 1.0}, "multipliers_file": str(tmp_path / "m.yaml")}})
