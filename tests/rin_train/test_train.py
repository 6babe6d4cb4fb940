"""Whole runs on the smoke preset: statuses, crashes, kills, resume, watchdog, bad configs."""

import json
import signal
import subprocess
import sys
import time

import pytest

import rin_train.trl.engine as engine
from rin_train.presets import preset
from rin_train.run_config import load_run_config
from rin_train.rundir import RunDir
from rin_train.train import model_num_layers, run_training
from srdd.cli import main
from srdd.tiny import ECHO_INIT_STD, build_tiny_llama, build_tiny_model


def _smoke(*sets):
    return load_run_config(None, list(sets), preset=preset("smoke"))


def _steps(out):
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _python(script, timeout=500):
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)


def test_model_depth_is_read_without_loading_weights(tmp_path):
    """Preflight checks noise layers against this depth, so it must be the depth load_policy builds."""
    config = json.loads((build_tiny_llama(tmp_path / "tiny") / "config.json").read_text())
    assert model_num_layers("tiny") == config["num_hidden_layers"] == 3
    assert model_num_layers(str(tmp_path / "tiny")) == 3
    echo = build_tiny_model("tiny-echo", tmp_path / "echo")
    assert model_num_layers("tiny-echo") == json.loads((echo / "config.json").read_text())["num_hidden_layers"]


def test_the_echo_model_knows_only_what_an_answer_is_made_of(tmp_path):
    """tiny-echo's 17 tokens: a prompt's digit and '####' survive, every other word is <unk>."""
    from transformers import AutoTokenizer

    from safetensors.torch import load_file

    path = build_tiny_model("tiny-echo", tmp_path / "echo")
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) == 17
    lm_head = load_file(path / "model.safetensors")["lm_head.weight"]
    assert lm_head.shape[0] == 17 and lm_head.std().item() == pytest.approx(ECHO_INIT_STD, rel=0.1)
    ids = tok("Ava has 7 books. Answer #### and the number.", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<unk>", "<unk>", "7", "<unk>", "<unk>", "####", "<unk>", "<unk>",
                                              "<unk>"]
    assert tok.decode(tok("#### 7", add_special_tokens=False)["input_ids"]) == "#### 7"


def test_hub_names_resolve_as_in_srdd_scan(offline_hub):
    """`model=` takes the same specs as `srdd scan --model`, through the same resolver."""
    assert model_num_layers("Qwen2.5-7B") == model_num_layers("Qwen/Qwen2.5-7B") == 3


def test_a_run_without_final_validation_is_invalid(tmp_path, monkeypatch):
    monkeypatch.setattr(engine.RunLogger, "should_validate", lambda self, step: step == 0)
    run = run_training(_smoke(), tmp_path / "run")
    info = run.info()
    assert info["status"] == "invalid" and "without validating the final step (3)" in info["reason"]
    assert not (tmp_path / "run" / "scan_after.json").exists()


def test_a_crash_marks_the_run_failed(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(engine.GRPOTrainer, "compute_loss", boom)
    with pytest.raises(RuntimeError):
        run_training(_smoke(), tmp_path / "run")
    info = RunDir.open(tmp_path / "run").info()
    assert info["status"] == "failed" and "simulated crash" in info["reason"]
    assert _steps(tmp_path / "run") == [0]


KILL_IN_FINAL_VALIDATION = """
import os, rin_train.trl.engine as e
orig = e.RunLogger.validate
def dying(self, model, step):
    if step == 3:
        os.kill(os.getpid(), {signal})
    return orig(self, model, step)
e.RunLogger.validate = dying
from srdd.cli import main
raise SystemExit(main(['train', '--preset', 'smoke', '--out', {out!r}]))
"""


def test_killed_before_final_validation_is_not_complete_and_resume_finishes_it(tmp_path):
    out = tmp_path / "run"
    r = _python(KILL_IN_FINAL_VALIDATION.format(signal=int(signal.SIGKILL), out=str(out)))
    assert r.returncode == -9, r.stderr[-2000:]
    run = RunDir.open(out)
    assert run.status == "running" and not run.is_live()  # killed: never complete, visibly dead
    assert _steps(out) == [0, 1, 2] and (out / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    assert not (out / "scan_after.json").exists()
    before = (out / "metrics.jsonl").read_text()
    assert main(["train", "--resume", "--out", str(out)]) == 0
    after = (out / "metrics.jsonl").read_text()
    assert after.startswith(before) and _steps(out) == [0, 1, 2, 3]  # nothing lost, nothing re-logged
    info = run.info()
    assert info["status"] == "complete" and info["resumed"][0]["previous_status"] == "running"
    assert (out / "scan_after.json").exists()


def test_sigterm_marks_the_run_failed(tmp_path):
    out = tmp_path / "run"
    r = _python(KILL_IN_FINAL_VALIDATION.format(signal=int(signal.SIGTERM), out=str(out)))
    assert r.returncode == 1, r.stderr[-2000:]
    info = RunDir.open(out).info()
    assert info["status"] == "failed" and info["reason"] == "terminated by SIGTERM"


def test_resume_without_a_checkpoint_keeps_logged_steps(tmp_path):
    out = tmp_path / "run"
    script = (
        "import os, rin_train.trl.engine as e\n"
        "orig = e.RunLogger.on_log\n"
        "def dying(self, args, state, *a, **k):\n"
        "    orig(self, args, state, *a, **k)\n"
        "    if state.global_step == 1: os._exit(9)\n"
        "e.RunLogger.on_log = dying\n"
        "from srdd.cli import main\n"
        f"raise SystemExit(main(['train', '--preset', 'smoke', '--out', {str(out)!r}]))\n"
    )
    assert _python(script).returncode == 9
    first = (out / "metrics.jsonl").read_text()
    assert _steps(out) == [0, 1] and not list(out.glob("checkpoints/checkpoint-*"))  # killed before a checkpoint
    assert main(["train", "--resume", "--out", str(out), "--set", "seed=1"]) == 2  # the recorded config is used
    assert main(["train", "--resume", "--out", str(out)]) == 0
    assert (out / "metrics.jsonl").read_text().startswith(first) and _steps(out) == [0, 1, 2, 3]
    assert RunDir.open(out).status == "complete"
    assert main(["train", "--resume", "--out", str(out)]) == 2  # complete runs are not resumed


def test_watchdog_ends_a_stalled_step_as_failed(tmp_path):
    out = tmp_path / "run"
    script = (
        # step 2 stalls: its last beat is made to look 1e6 s old and the step never ends. The timeout is
        # the preset's 300 s, which real work on a loaded machine never reaches, so only the stall fires it.
        "import time, rin_train.trl.engine as e\n"
        "orig = e.RunLogger.on_step_begin\n"
        "def stalled(self, args, state, *a, **k):\n"
        "    orig(self, args, state, *a, **k)\n"
        "    if state.global_step == 1:\n"
        "        self.watchdog._last -= 1e6\n"
        "        time.sleep(600)\n"
        "e.RunLogger.on_step_begin = stalled\n"
        "from srdd.cli import main\n"
        f"raise SystemExit(main(['train', '--preset', 'smoke', '--out', {str(out)!r}]))\n"
    )
    t0 = time.monotonic()
    r = _python(script)
    assert r.returncode == 3, r.stderr[-2000:]
    assert time.monotonic() - t0 < 400  # ended by the watchdog, not by the sleep
    info = RunDir.open(out).info()
    assert info["status"] == "failed" and "watchdog: no progress" in info["reason"] and "step 2" in info["reason"]
    assert _steps(out) == [0, 1]


@pytest.mark.parametrize("sets,message", [
    (["bogus=1"], "unknown key(s) ['bogus']"),
    (["grpo.stepz=3"], "grpo: unknown key(s) ['stepz']"),
    (["noise.sigma_start=0.001", "noise.sigma_end=0.01"], "sigma_end 0.01 > sigma_start 0.001"),
    (["noise.sigma_start=-1"], "noise.sigma_start: Input should be greater than or equal to 0"),
    (["grpo.dtype=float16"], "grpo.dtype must be one of ['float32', 'bfloat16']"),
    (["noise.layer_multipliers={9: 1.0}"], "layers [9]"),
    (["noise.zone_overrides=[{name: z, layers: [1, 4], sigma_start: 0.05, sigma_end: 0.01}]"], "layers [4]"),
])
def test_bad_configs_fail_before_training(tmp_path, capsys, sets, message):
    args = ["train", "--preset", "smoke", "--out", str(tmp_path / "run")]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("var,value,message", [
    ("SRDD_PASS_WORKERS", "two", "SRDD_PASS_WORKERS must be a positive whole number, got 'two'"),
    ("SRDD_MAPPED_UPDATE", "yes", "SRDD_MAPPED_UPDATE must be 1 (map an update's allocations) or 0, got 'yes'"),
    ("SRDD_PACKED_WEIGHTS", "on", "SRDD_PACKED_WEIGHTS must be 1 (hold frozen E2M1 weights packed) or 0, got 'on'"),
])
def test_a_bad_memory_setting_fails_before_a_model_loads(tmp_path, capsys, monkeypatch, var, value, message):
    monkeypatch.setenv(var, value)
    assert main(["train", "--preset", "smoke", "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_bad_config_file_and_existing_run_dir(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("noise: {schedule: exponential, sigma_start: 0.01, sigma_end: 0.05}\n")
    assert main(["train", str(cfg), "--preset", "smoke", "--out", str(tmp_path / "run")]) == 2
    assert "sigma_end 0.05 > sigma_start 0.01" in capsys.readouterr().err
    existing = tmp_path / "old"
    existing.mkdir()
    (existing / "metrics.jsonl").write_text('{"step": 0}\n')
    assert main(["train", "--preset", "smoke", "--out", str(existing)]) == 2
    assert "never overwritten" in capsys.readouterr().err
    assert (existing / "metrics.jsonl").read_text() == '{"step": 0}\n'


def test_a_bf16_policy_trains_and_logs_the_noise_bf16_kept(tmp_path):
    """grpo.dtype=bfloat16: bf16 base weights, fp32 noise masters; the achieved sigma shows bf16's rounding."""
    out = tmp_path / "run"
    run = run_training(_smoke("grpo.dtype=bfloat16", "noise.targets=[rmsnorm]", "noise.sigma_start=0.0005",
                              "noise.sigma_end=0.0005", "noise.num_stages=1"), out)
    assert run.info()["status"] == "complete"
    info = json.loads((out / "run.json").read_text())
    assert info["config"]["grpo"]["dtype"] == "bfloat16"
    model = info["provenance"]["model"]
    assert model["spec"] == "tiny" and model["repo_id"] is None and "header_sha256" in model["files"]["model.safetensors"]
    assert info["provenance"]["machine"]["device"] == "cpu" and info["provenance"]["command"]
    assert info["wall_time_s"] > 0
    achieved = [v for r in run.logged_steps() if r.get("sigma_layers") for v in r["sigma_layers"].values()]
    # RMSNorm weights sit at 1.0, where bf16's spacing is 2^-7: noise of 5e-4 mostly rounds away.
    assert achieved and all(a < 0.0005 * 0.8 for a in achieved)
