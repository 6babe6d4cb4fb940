"""`srdd train --preset smoke` end to end in a subprocess, as a user runs it."""

import json
import subprocess
import sys

import pytest

from rin_train.rundir import RunDir


def srdd(*args, timeout: float = 600):
    return subprocess.run([sys.executable, "-m", "srdd", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_smoke_run_produces_a_valid_run_directory(tmp_path):
    out = tmp_path / "runs" / "smoke"
    r = srdd("train", "--preset", "smoke", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "quantized 21 linear modules under mxfp4/w4a4" in r.stdout and "lm_head" not in r.stdout.split(
        "LoRA adapters")[1].split("run smoke")[0]
    assert "step    3:" in r.stdout and "run smoke: complete" in r.stdout
    assert r.stdout.count("complete") == 1  # said once, at the end
    # the modules are counted on screen and listed in the run directory
    assert "q_proj 3, k_proj 3, v_proj 3, o_proj 3, gate_proj 3, up_proj 3, down_proj 3" in r.stdout
    assert "base_layer" not in r.stdout
    listed = (out / "quantized_modules.txt").read_text().splitlines()
    assert len(listed) == 21 and listed[0] == "base_model.model.model.layers.0.self_attn.q_proj.base_layer"
    assert "Warning" not in r.stderr and "mtime" not in r.stderr, r.stderr[-3000:]
    assert not (out / "run.lock").exists()  # a finished run carries no lock file
    info = json.loads((out / "run.json").read_text())
    assert info["schema"] == "srdd.run/v1" and info["status"] == "complete" and info["reason"] is None
    assert info["name"] == "smoke" and info["finished"] and info["config"]["seed"] == 0
    assert info["config"]["quant"]["format"] == "mxfp4" and info["config"]["quant"]["mode"] == "w4a4"
    assert info["config"]["noise"]["enabled"] is True and info["config"]["model"] == "tiny"
    assert info["versions"]["trl"] and info["versions"]["torch"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in records] == [0, 1, 2, 3]
    for rec in (records[0], records[-1]):  # step 0 and the final step are validated
        assert 0.0 <= rec["accuracy"] <= 1.0 and 0.0 <= rec["accuracy_flexible"] <= 1.0
        assert rec["eval_quant"] == "mxfp4/w4a4" and rec["eval_samples"] == 8
    for rec in records[1:]:
        assert rec["sigma"] > 0 and set(rec["sigma_layers"]) == {"0", "1", "2"}
        assert {"reward_mean", "zero_variance_groups", "groups", "loss", "wall_s"} <= set(rec)
    for which in ("before", "after"):
        doc = json.loads((out / f"scan_{which}.json").read_text())
        assert doc["schema"] == "srdd.scan/v1" and doc["format"]["name"] == "mxfp4"
        assert len(doc["layers"]) == 3
    assert not RunDir.open(out).is_live()

    again = srdd("train", "--preset", "smoke", "--out", out)
    assert again.returncode == 2 and "never overwritten" in again.stderr
    assert json.loads((out / "run.json").read_text()) == info


def test_help_and_usage_errors(tmp_path):
    r = srdd("train", "--help")
    assert r.returncode == 0 and "--resume" in r.stdout and "--preset" in r.stdout
    r = srdd("train", "--out", tmp_path / "x")
    assert r.returncode == 2 and "config file or --preset" in r.stderr
    r = srdd("train", "--preset", "smoke", "--out", tmp_path / "x", "--launch")
    assert r.returncode == 2 and "--launch is for --engine verl" in r.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_demo_preset(tmp_path):
    """SmolLM2-135M, NVFP4 W4A16 + noise, 36 steps: about 10 minutes on 2 quiet CPU cores (30 allowed)."""
    out = tmp_path / "demo"
    r = srdd("train", "--preset", "demo", "--out", out, timeout=1700)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [rec for rec in records if rec["accuracy"] is not None]
    assert [rec["step"] for rec in evals] == [0, 12, 24, 36]
    assert {rec["eval_quant"] for rec in evals} == {"nvfp4/w4a16"}
    assert evals[0]["accuracy"] > 0.05  # the untrained policy solves some problems: there is something to learn
    assert any(rec["zero_variance_groups"] < rec["groups"] for rec in records[1:])  # GRPO had a signal
    print(f"demo: accuracy {evals[0]['accuracy']:.3f} at step 0, {evals[-1]['accuracy']:.3f} at step 36, "
          f"{records[-1]['wall_s']:.0f} s of training")
