"""`srdd train --engine verl`: the run directory it prepares, the verl command round trip, refusals through the
real entry point, and the launcher (teeing, incremental metrics, status) with a scripted stand-in for verl."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from rin_train.verl import engine as engine_verl
from rin_train.presets import preset
from rin_train.rundir import RunDir
from rin_train.run_config import config_for_resume, load_run_config
from rin_train.outcomes import sha256_of_test_set
from rin_train.tasks import drop_long_prompts, load_task, problem_ids, read_task_file
from rin_train.verl.command import PLUGIN_MODULE, REWARD_FILE
from rin_train.verl.launch import MetricsCollector, metrics_record, run_verl
from rin_train.verl.settings import SETTINGS_ENV, PluginSettings
from srdd.cli import main

CAN_LAUNCH = not engine_verl.missing_imports()
SETS = ["engine=verl", "seed=3", "grpo.beta=0.04", "grpo.learning_rate=3.0e-6", "task.format_score=0.1",
        "lora.target_modules=[q_proj, v_proj]", "eval.every=2", "noise.layer_multipliers={0: 0.5, 1: 1.0, 2: 1.5}",
        "noise.targets=[rmsnorm]"]


def _cfg(*extra: str, name: str = "e"):
    return load_run_config(preset=preset("smoke"), name=name, sets=[*SETS, *extra])


def _args(out: Path, *, launch: bool = False, resume: bool = False) -> argparse.Namespace:
    return argparse.Namespace(out=out, launch=launch, resume=resume)


def _command(run: Path) -> tuple[list[str], list[str]]:
    """(exports, overrides) of verl_command.sh, as bash would split them."""
    text = (run / "verl_command.sh").read_text()
    exports = [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("export ")]
    tokens = shlex.split(text[text.index("exec "):].replace("\\\n", " "))
    assert tokens[:4] == ["exec", "${PYTHON:-python3}", "-m", "verl.trainer.main_ppo"] and tokens[-1] == "$@"
    return exports, tokens[4:-1]


def _parse(overrides: list[str]) -> dict:
    parser = pytest.importorskip("hydra.core.override_parser.overrides_parser").OverridesParser.create()
    parsed = parser.parse_overrides(overrides)
    return {("+" if o.is_add() else "") + o.key_or_group: o.value() for o in parsed}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("verl") / "runs" / "e"
    cfg = _cfg()
    assert engine_verl.main(cfg, _args(out)) == 0
    return cfg, out


def test_prepared_run_directory_says_it_was_not_run(prepared):
    cfg, out = prepared
    info = RunDir.open(out).info()
    assert info["schema"] == "srdd.run/v1" and info["status"] == "invalid" and info["finished"]
    assert info["reason"].startswith("prepared, not run") and "--resume --launch" in info["reason"]
    assert info["config"] == json.loads(json.dumps({**cfg.to_dict(), "seed": 3}))
    assert config_for_resume(info["config"]) == cfg  # what --resume --launch runs is this config
    assert RunDir.open(out).logged_steps() == []
    assert (out / "verl_command.sh").stat().st_mode & 0o111


def test_every_config_field_reaches_a_verl_override_that_parses(prepared):
    cfg, out = prepared
    root = out.resolve()
    exports, overrides = _command(out)
    o = _parse(overrides)
    env = {"VERL_USE_EXTERNAL_MODULES": PLUGIN_MODULE, SETTINGS_ENV: str(root / "verl" / "plugin_settings.json"),
           "VERL_FILE_LOGGER_PATH": str(root / "verl" / "metrics.jsonl")}
    assert exports == [f"{k}={v}" for k, v in env.items()]
    assert o["+ray_kwargs.ray_init.runtime_env.env_vars"] == env  # also for a Ray cluster started elsewhere
    expected = {
        "algorithm.adv_estimator": "grpo", "algorithm.use_kl_in_reward": False,
        "data.train_files": str(root / "data" / "train.parquet"), "data.val_files": str(root / "data" / "test.parquet"),
        "data.train_batch_size": 2, "data.max_prompt_length": 128, "data.max_response_length": 8, "data.seed": 3,
        "actor_rollout_ref.model.path": str(root / "model"),
        "actor_rollout_ref.model.external_lib": PLUGIN_MODULE,
        "actor_rollout_ref.model.lora_rank": 4, "actor_rollout_ref.model.lora_alpha": 8,
        "actor_rollout_ref.model.target_modules": ["q_proj", "v_proj"],
        "actor_rollout_ref.actor.optim.lr": 3.0e-6, "actor_rollout_ref.actor.ppo_mini_batch_size": 2,
        "actor_rollout_ref.actor.use_kl_loss": True, "actor_rollout_ref.actor.kl_loss_coef": 0.04,
        "actor_rollout_ref.rollout.name": "vllm", "actor_rollout_ref.rollout.n": 2,
        "actor_rollout_ref.rollout.temperature": 1.0, "actor_rollout_ref.rollout.enforce_eager": True,
        "actor_rollout_ref.rollout.seed": 3, "actor_rollout_ref.rollout.val_kwargs.do_sample": False,
        "reward.custom_reward_function.path": str(REWARD_FILE),
        "reward.custom_reward_function.name": "compute_score",
        "+reward.custom_reward_function.reward_kwargs": {"format_score": 0.1},
        "trainer.total_training_steps": 3, "trainer.test_freq": 2, "trainer.val_before_train": True,
        "trainer.save_freq": 2, "trainer.default_local_dir": str(root / "checkpoints"),
        "trainer.validation_data_dir": str(root / "verl" / "generations"),
        "trainer.logger": ["console", "file"], "trainer.experiment_name": "e",
        "trainer.use_v1": True, "trainer.v1.trainer_mode": "sync",
    }
    assert {k: o.get(k) for k in expected} == expected
    assert o["trainer.total_epochs"] * (32 // 2) >= 3  # enough epochs to reach the step count
    assert len(o) == len(overrides)  # no key given twice
    assert Path(o["reward.custom_reward_function.path"]).is_file()


LORA_RANK = "actor_rollout_ref.model.lora_rank"
ENV_VARS = "ray_kwargs.ray_init.runtime_env.env_vars"


@pytest.mark.parametrize("extra, owned", [
    (f"{LORA_RANK}=0", LORA_RANK), (f"+{LORA_RANK}=0", LORA_RANK), (f"++{LORA_RANK}=0", LORA_RANK),
    (f"~{LORA_RANK}", LORA_RANK), ("actor_rollout_ref.model={lora_rank: 0}", "actor_rollout_ref.model.path"),
    ("actor_rollout_ref.actor.optim.lr=1e-4", "actor_rollout_ref.actor.optim.lr"),
    (f"+{ENV_VARS}.SRDD_VERL_SETTINGS=/elsewhere.json", ENV_VARS),
])
def test_extra_arguments_may_not_change_what_run_json_records(prepared, tmp_path, extra, owned):
    """Issue 26: `bash verl_command.sh actor_rollout_ref.model.lora_rank=0` trained all weights under a run.json
    that said LoRA r=4. An argument that changes a key set from the run config is refused before verl starts."""
    _, out = prepared
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    stub = tmp_path / "python"
    stub.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'verl_ran'}\n")
    stub.chmod(0o755)
    r = subprocess.run(["bash", str(out / "verl_command.sh"), "trainer.n_gpus_per_node=8", extra],
                       capture_output=True, text=True, env={**os.environ, "PYTHON": str(stub)}, timeout=60)
    assert r.returncode == 2 and f"refused '{extra}': it changes {owned}, which srdd set" in r.stderr, r.stderr
    assert "--set lora.r=0" in r.stderr and not (tmp_path / "verl_ran").exists()
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    r = subprocess.run(["bash", str(out / "verl_command.sh"), "trainer.n_gpus_per_node=8",
                        "actor_rollout_ref.rollout.gpu_memory_utilization=0.6"],
                       capture_output=True, text=True, env={**os.environ, "PYTHON": str(stub)}, timeout=60)
    assert r.returncode == 0, r.stderr  # the cluster's layout and keys srdd does not set pass through, last
    assert (tmp_path / "verl_ran").read_text().split()[-2:] == [
        "trainer.n_gpus_per_node=8", "actor_rollout_ref.rollout.gpu_memory_utilization=0.6"]


def test_full_fine_tuning_is_a_run_config_setting_that_run_json_records(tmp_path):
    run = engine_verl.prepare(_cfg("lora.r=0"), tmp_path / "full")
    run.release()
    assert run.info()["config"]["lora"]["r"] == 0
    assert _parse(_command(run.path)[1])["actor_rollout_ref.model.lora_rank"] == 0


def test_plugin_settings_and_data_are_what_the_trl_engine_would_use(prepared):
    cfg, out = prepared
    settings = PluginSettings.read(out / "verl" / "plugin_settings.json")
    assert settings == PluginSettings.from_run_config(cfg, out / "verl" / "noise")
    assert settings.noise_config().layer_multipliers == {0: 0.5, 1: 1.0, 2: 1.5}
    assert settings.linear_quant().label == "mxfp4/w4a4" and settings.total_steps == 3

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    train, test = load_task(cfg.task, cfg.seed)
    assert read_task_file(out / "data" / "train.parquet") == drop_long_prompts(train, tokenizer, 128, "train")
    assert read_task_file(out / "data" / "test.parquet") == test[: cfg.eval.samples]
    frame = pd.read_parquet(out / "data" / "train.parquet")
    assert list(frame.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert set(frame["data_source"]) == {"srdd/arithmetic"} and frame["reward_model"][0]["style"] == "rule"


def test_smoke_preset_through_the_real_entry_point(tmp_path):
    out = tmp_path / "runs" / "smoke"
    r = subprocess.run([sys.executable, "-m", "srdd", "train", "--preset", "smoke", "--engine", "verl", "--out",
                        str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "verl run smoke prepared" in r.stdout and "python3}\" -m verl.trainer.main_ppo" in r.stdout
    assert r.stdout.splitlines()[-1].startswith("verl environment: " + (
        "all 10 modules a run imports are present" if CAN_LAUNCH else "10 of 10 modules a run imports are missing"))
    assert json.loads((out / "run.json").read_text())["status"] == "invalid"
    for path in ("verl_command.sh", "verl/plugin_settings.json", "data/train.parquet", "data/test.parquet",
                 "model/config.json", "metrics.jsonl"):
        assert (out / path).is_file(), path

    if CAN_LAUNCH:
        return  # --launch would start verl for real (no GPU here)
    r = subprocess.run([sys.executable, "-m", "srdd", "train", "--preset", "smoke", "--engine", "verl", "--out",
                        str(tmp_path / "launched"), "--launch"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "--launch needs every module a verl run imports" in r.stderr
    assert "transfer_queue (ModuleNotFoundError" in r.stderr and r.stderr.count("\n") == 1  # one line
    assert not (tmp_path / "launched").exists()


@pytest.mark.parametrize("sets, message", [
    (["model=/nonexistent/model"], "not found"),
    (["eval.max_new_tokens=16"], "verl validates with the training response length"),
    (["lora.dropout=0.1"], "LoRA without dropout"),
    (["eval.shared_prefix=true"], "eval.shared_prefix is for the trl engine"),
    (["grpo.shared_prompt=true"], "grpo.shared_prompt is for the trl engine"),
    (["grpo.stop_after_zero_variance_steps=2"], "cannot be enforced inside verl"),
    (["noise.sigma_basis=effective"], "vLLM's fused norm does not expose"),
    (["grpo.dtype=bfloat16"], "grpo.dtype=bfloat16 is for the trl engine"),
    (["grpo.matmul_dtype=bfloat16"], "grpo.matmul_dtype=bfloat16 is for the trl engine"),
    (["noise.layer_multipliers={7: 2.0}"], "has 3 decoder layers"),
    (["quant.exclude=[lm_head, embed_tokens, q_proj]"], "vLLM fuses them into model.layers.0.self_attn.qkv_proj"),
    (["quant.exclude=[embed_tokens]"], "keep lm_head in quant.exclude"),
    (["quant.exclude=[lm_head]"], "keep embed_tokens in quant.exclude"),
])
def test_refusals_write_nothing(tmp_path, capsys, sets, message):
    out = tmp_path / "r"
    argv = ["train", "--preset", "smoke", "--engine", "verl", "--out", str(out)]
    assert main([*argv, *(a for s in sets for a in ("--set", s))]) == 2
    assert message in capsys.readouterr().err and not out.exists()


@pytest.mark.skipif(importlib.util.find_spec("verl") is None, reason="verl is not installed here")
def test_a_verl_environment_imports_the_v1_trainer_and_everything_a_run_needs():
    """Where verl is installed (pip install 'srdd[verl]'), its v1 trainer entry point, TransferQueue, the
    rollout servers' uvicorn/fastapi and vLLM all import: the run would not die before training."""
    assert engine_verl.missing_imports() == {}


def test_resume_runs_the_prepared_command_only_with_launch(prepared, capsys):
    _, out = prepared
    before = (out / "run.json").read_text()
    assert main(["train", "--resume", "--out", str(out)]) == 2
    assert "add --launch" in capsys.readouterr().err
    if not CAN_LAUNCH:
        assert main(["train", "--resume", "--launch", "--out", str(out)]) == 2
        assert "--launch needs every module a verl run imports" in capsys.readouterr().err
    assert (out / "run.json").read_text() == before


# --- the launcher, with a scripted stand-in for verl -------------------------------------------------

FAKE_VERL = textwrap.dedent("""
    # Writes what verl 0.9.1 and our plugin write while a run goes: the file logger's JSONL
    # ({"step": N, "data": {...}}, val-core/val-aux keys of our data source) and the vLLM workers'
    # noise logs (one file per process, the noise of each synced weights version).
    import json, os, sys, time
    plan = json.loads(sys.argv[1])
    log = open(os.environ["VERL_FILE_LOGGER_PATH"], "wb", buffering=0)
    os.makedirs(plan["noise_dir"], exist_ok=True)
    def noise(version, rank):
        if version in plan["noise_versions"]:
            with open(os.path.join(plan["noise_dir"], f"host-{rank}.jsonl"), "a") as fh:
                fh.write(json.dumps({"version": version, "sigma": 0.05, "rank": rank, "replica": "0",
                                     "sigma_layers": {"0": 0.025 + 0.001 * rank, "1": 0.05, "2": 0.075}}) + "\\n")
    for step in range(plan["steps"] + 1):
        data = {"critic/score/mean": 0.25 * step, "actor/pg_loss": 0.01, "response_length/mean": 7.5,
                "timing_s/step": 1.5, "critic/score/max": float("nan")} if step else {}
        if step in plan["validated"]:
            data.update({"val-core/srdd/arithmetic/acc/mean@1": 0.5 + 0.1 * step,
                         "val-aux/srdd/arithmetic/acc_flexible/mean@1": 0.6, "val-aux/srdd/arithmetic/score/mean@1": 0.5})
        print(f"(TaskRunner pid=1) step:{step} - " + " - ".join(f"{k}:{v}" for k, v in data.items()), flush=True)
        log.write((json.dumps({"step": step, "data": data}) + "\\n").encode())
        for rank in (0, 1):
            noise(step, rank)
        time.sleep(plan.get("sleep", 0.05))
    sys.exit(plan["exit"])
""")


def _launch(tmp_path, *, steps=3, validated=(0, 2, 3), noise_versions=(0, 1, 2), exit=0, sleep=0.05,
            stall_timeout_s=60.0, logged=()):
    cfg = _cfg(f"grpo.steps={steps}", f"grpo.stall_timeout_s={stall_timeout_s}", name="launched")
    run = RunDir.create(tmp_path / "run", name=cfg.name, config=cfg.to_dict(), seed=cfg.seed)
    for step in logged:
        run.append_metrics({"step": step, "sigma": None, "sigma_layers": None, "reward_mean": None})
    (run.path / "verl").mkdir()
    fake = tmp_path / "fake_verl.py"
    fake.write_text(FAKE_VERL)
    noise_dir = run.path / "verl" / "noise"
    plan = {"steps": steps, "validated": list(validated), "noise_versions": list(noise_versions), "exit": exit,
            "noise_dir": str(noise_dir), "sleep": sleep}
    collector = MetricsCollector(run, verl_log=run.path / "verl" / "metrics.jsonl", noise_dir=noise_dir,
                                 data_source="srdd/arithmetic", quant_label=cfg.quant_label, eval_samples=8)
    env = {"VERL_FILE_LOGGER_PATH": str(run.path / "verl" / "metrics.jsonl"), "PATH": "/usr/bin:/bin"}
    code = run_verl([sys.executable, str(fake), json.dumps(plan)], run, collector, env=env, final_step=steps,
                    stall_timeout_s=stall_timeout_s, poll_s=0.02)
    return code, run


def test_launch_fills_metrics_as_verl_logs_and_completes(tmp_path, capfd):
    code, run = _launch(tmp_path)
    assert code == 0 and run.info()["status"] == "complete" and run.info()["reason"] is None
    records = run.logged_steps()
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert records[0]["sigma"] is None and records[0]["accuracy"] == pytest.approx(0.5)
    for rec in records[1:]:  # the rollouts of step s ran on weights version s-1: its noise, mean over ranks
        assert rec["sigma"] == 0.05 and rec["sigma_layers"] == pytest.approx({"0": 0.0255, "1": 0.05, "2": 0.075})
        assert rec["reward_mean"] == pytest.approx(0.25 * rec["step"]) and rec["step_s"] == 1.5
    assert [r["accuracy"] is not None for r in records] == [True, False, True, True]
    assert records[3] == {**records[3], "accuracy": pytest.approx(0.8), "accuracy_flexible": 0.6,
                          "eval_samples": 8, "eval_quant": "mxfp4/w4a4", "loss": 0.01, "completion_mean_length": 7.5}
    assert records[1]["eval_quant"] is None and records[1]["accuracy_flexible"] is None
    assert "step:3 - critic/score/mean:0.75" in (run.path / "verl" / "verl.log").read_text()
    assert "step:3 - critic/score/mean:0.75" in capfd.readouterr().out  # teed to the terminal too


def test_launch_without_final_validation_is_invalid(tmp_path):
    code, run = _launch(tmp_path, validated=(0, 2))
    assert code == 1 and run.info()["status"] == "invalid" and "final step (3)" in run.info()["reason"]


def test_launch_without_recorded_rollout_noise_is_invalid(tmp_path):
    code, run = _launch(tmp_path, noise_versions=(0, 2))
    assert code == 1 and run.info()["status"] == "invalid" and "steps [2]" in run.info()["reason"]
    assert run.logged_steps()[2]["sigma_layers"] is None


def test_launch_that_verl_fails_is_failed(tmp_path):
    code, run = _launch(tmp_path, exit=1)
    assert code == 1 and run.info()["status"] == "failed" and "exited with code 1" in run.info()["reason"]


def test_launch_stalled_is_failed_by_the_watchdog(tmp_path):
    code, run = _launch(tmp_path, sleep=30, stall_timeout_s=0.5)
    assert code == 3 and run.info()["status"] == "failed" and "watchdog" in run.info()["reason"]
    assert [r["step"] for r in run.logged_steps()] == [0]


def test_relaunch_does_not_log_a_step_twice(tmp_path):
    code, run = _launch(tmp_path, logged=(0, 1))
    assert code == 0 and [r["step"] for r in run.logged_steps()] == [0, 1, 2, 3]


def test_metrics_record_ignores_non_finite_values():
    rec = metrics_record(2, {"critic/score/mean": float("nan"), "val-core/openai/gsm8k/acc/mean@1": 0.5},
                         data_source="openai/gsm8k", quant_label="nvfp4/w4a4", eval_samples=64, noise=None, wall_s=1.0)
    assert rec["reward_mean"] is None and rec["accuracy"] == 0.5 and rec["eval_quant"] == "nvfp4/w4a4"


STAND_IN_VERL = {
    **{module.replace(".", "/") + ".py": "" for module in engine_verl.RUN_IMPORTS},
    **{"/".join(module.split(".")[:i]) + "/__init__.py": "" for module in engine_verl.RUN_IMPORTS
       for i in range(1, module.count(".") + 1)},
    # like verl/__init__.py: import what $VERL_USE_EXTERNAL_MODULES names (our plugin, with its settings)
    "verl/__init__.py": "import importlib, os\n"
                        "for m in filter(None, os.getenv('VERL_USE_EXTERNAL_MODULES', '').split(',')):\n"
                        "    importlib.import_module(m)\n",
    # a run as verl's sync trainer logs it: validation at 0, every test_freq and at the last step, each one's
    # samples dumped into trainer.validation_data_dir (the first two problems right); the plugin's rollout
    # noise for each synced weights version (what RolloutNoise.apply writes in the vLLM workers)
    "verl/trainer/main_ppo.py": textwrap.dedent("""
        import json, os, sys
        import pandas as pd
        from transformers import AutoTokenizer
        from tests.rin_train.verl.verl_dumps import verl_input, write_dump
        if __name__ == "__main__":
            import rin_train.verl.plugin as plugin
            args = dict(a.split("=", 1) for a in sys.argv[1:])
            steps, every = int(args["trainer.total_training_steps"]), int(args["trainer.test_freq"])
            val = pd.read_parquet(args["data.val_files"])
            source = val["data_source"][0]
            tokenizer = AutoTokenizer.from_pretrained(args["actor_rollout_ref.model.path"])
            truths = [truth["ground_truth"] for truth in val["reward_model"]]
            samples = [(verl_input(tokenizer, prompt), f"#### {truth}" if i < 2 else "#### -1", truth)
                       for i, (prompt, truth) in enumerate(zip(val["prompt"], truths))]
            os.makedirs(plugin.SETTINGS.noise_log_dir)
            log = open(os.environ["VERL_FILE_LOGGER_PATH"], "wb", buffering=0)
            for step in range(steps + 1):
                data = {"critic/score/mean": 0.5} if step else {}
                if step == 0 or step == steps or step % every == 0:
                    write_dump(args["trainer.validation_data_dir"], step, samples, data_source=source)
                    data[f"val-core/{source}/acc/mean@1"] = 2 / len(samples)
                log.write((json.dumps({"step": step, "data": data}) + "\\n").encode())
                with open(os.path.join(plugin.SETTINGS.noise_log_dir, "w.jsonl"), "a") as fh:
                    fh.write(json.dumps({"version": step, "sigma": 0.05, "sigma_layers": {"0": 0.05}, "rank": 0})
                             + "\\n")
                print(f"step:{step} - " + " - ".join(f"{k}:{v}" for k, v in data.items()), flush=True)
    """),
}


def test_launch_through_the_real_entry_point_with_a_stand_in_verl(tmp_path):
    """`--launch` end to end: the script's environment reaches 'verl', which imports our plugin with its
    settings, what it logs becomes a complete run, and the samples it dumps where the command told it to become
    eval_outcomes.jsonl. verl itself is replaced by a stand-in (no GPU here)."""
    for rel, text in STAND_IN_VERL.items():
        (tmp_path / "fake" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fake" / rel).write_text(text)
    out = tmp_path / "runs" / "launched"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'fake'}:{Path(__file__).parents[3]}"}
    r = subprocess.run([sys.executable, "-m", "srdd", "train", "--preset", "smoke", "--engine", "verl", "--out",
                        str(out), "--launch"], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    info = RunDir.open(out).info()
    assert info["status"] == "complete" and info["reason"] is None
    records = RunDir.open(out).logged_steps()
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert [r["accuracy"] for r in records] == [0.25, None, 0.25, 0.25]
    assert all(r["sigma_layers"] == {"0": 0.05} for r in records[1:])
    assert "step:3 - critic/score/mean:0.5" in (out / "verl" / "verl.log").read_text()
    test = read_task_file(out / "data" / "test.parquet")  # the 8 problems verl validated on, in their order
    lines = [json.loads(line) for line in (out / "eval_outcomes.jsonl").read_text().splitlines()]
    assert [(o["step"], o["eval_lora"], o["eval_quant"], o["strict"], o["flexible"]) for o in lines] == [
        (step, "separate", "mxfp4/w4a4", "11000000", "11000000") for step in (0, 2, 3)]
    assert all(o["ids"] == problem_ids(test) and o["test_set_sha256"] == sha256_of_test_set(o["ids"], test)
               for o in lines)
    assert "per-problem outcomes of the validations at steps [0, 2, 3] (8 problems each" in r.stdout


def _flags(words: list[str]) -> dict[str, str]:
    return {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}


def test_readme_verl_example_trains_a_suite_calibrated_on_the_model_it_trains():
    """Layer multipliers fit one model (check_against_model refuses SmolLM2's 30 for Qwen2.5-1.5B's 28 layers):
    the README's verl example scans the model it trains, calibrates that scan into a suite, trains from it."""
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    block = readme.split("# verl: scan and calibrate the model you train", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].split() for line in block.splitlines() if line.startswith("srdd ")]
    scan, calibrate, train = ([c for c in commands if c[1] == verb] for verb in ("scan", "calibrate", "train"))
    assert len(scan) == len(calibrate) == len(train) == 1
    scan, calibrate, train = _flags(scan[0]), calibrate[0], train[0]
    suite = _flags(calibrate)["--suite"]
    assert calibrate[2] == scan["--out"] and train[2].startswith(suite) and _flags(train)["--engine"] == "verl"
    assert _flags(train)["--set"] == f"model={scan['--model']}"
