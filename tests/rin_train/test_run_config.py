"""Run configs: partial YAML + defaults, unknown keys named, values and cross-section rules checked."""

import json

import pytest
import yaml

from rin_train.presets import PRESETS, preset
from rin_train.run_config import check_against_model, config_for_resume, load_run_config
from srdd.errors import SrddError


def test_a_partial_yaml_is_filled_with_defaults(tmp_path):
    path = tmp_path / "E13j-variable.yaml"
    path.write_text(yaml.safe_dump({"quant": {"format": "nvfp4"}, "noise": {"sigma_start": 0.08}}))
    cfg = load_run_config(path)
    assert cfg.name == "E13j-variable" and cfg.seed == 0 and cfg.model == "smollm2" and cfg.engine == "trl"
    assert cfg.quant.format == "nvfp4" and cfg.quant_label == "nvfp4/w4a4"
    assert list(cfg.quant.exclude) == ["lm_head", "embed_tokens"]
    assert cfg.noise.sigma_start == 0.08 and cfg.noise.sigma_end == 0.0005 and cfg.noise.num_stages == 10
    assert cfg.grpo.steps == 58 and cfg.grpo.max_prompt_length == 256 and cfg.lora.r == 32
    assert cfg.eval.every == 10 and cfg.scan.samples == 8 and cfg.task.train_size == 512


def test_precedence_preset_file_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("grpo: {steps: 4}\nnoise: {num_stages: 2}\n")
    cfg = load_run_config(path, ["grpo.learning_rate=0.5", "noise.targets=[rmsnorm]", "seed=7"],
                          preset=preset("smoke"), name="mine")
    assert cfg.name == "mine" and cfg.seed == 7 and cfg.model == "tiny"
    assert cfg.grpo.steps == 4 and cfg.grpo.learning_rate == 0.5 and cfg.grpo.num_generations == 2
    assert list(cfg.noise.targets) == ["rmsnorm"] and cfg.noise.num_stages == 2


def test_the_resolved_config_round_trips_through_json():
    cfg = load_run_config(None, ["noise.layer_multipliers={0: 2.0, 2: 0.5}"], preset=preset("smoke"))
    recorded = json.loads(json.dumps(cfg.to_dict()))
    assert config_for_resume(recorded) == cfg


@pytest.mark.parametrize("data,resolved", [
    ({}, "bfloat16"),  # mxfp4 W4A4 on fp32 weights: both GEMM operands are exact in bf16
    ({"quant": {"format": "mxfp6_e3m2"}}, "bfloat16"),
    ({"quant": {"format": "nvfp4"}}, "float32"),  # its fp32 tensor scale makes values bf16 would round
    ({"quant": {"mode": "w4a16"}}, "float32"),  # fp32 activations
    ({"grpo": {"dtype": "bfloat16"}}, "bfloat16"),
    ({"engine": "verl"}, "float32"),  # verl runs its own mixed precision
    ({"grpo": {"matmul_dtype": "float32"}}, "float32"),
    ({"quant": {"format": "nvfp4"}, "grpo": {"matmul_dtype": "bfloat16"}}, "bfloat16"),
])
def test_matmul_dtype_auto_is_resolved_and_recorded(data, resolved):
    cfg = load_run_config(data)
    assert cfg.grpo.matmul_dtype == resolved
    recorded = json.loads(json.dumps(cfg.to_dict()))
    assert recorded["grpo"]["matmul_dtype"] == resolved and config_for_resume(recorded) == cfg


def test_a_run_recorded_before_matmul_dtype_resumes_with_the_matmuls_it_ran():
    recorded = json.loads(json.dumps(load_run_config(None, preset=preset("smoke")).to_dict()))
    del recorded["grpo"]["matmul_dtype"]
    assert config_for_resume(recorded).grpo.matmul_dtype == "float32"


@pytest.mark.parametrize("data,message", [
    ({"bogus": 1}, "config: unknown key(s) ['bogus']; valid keys: name, seed"),
    ({"grpo": {"stepz": 3}}, "grpo: unknown key(s) ['stepz']; valid keys: steps"),
    ({"grpo": {"steps": "ten"}}, "grpo.steps: Input should be a valid integer, got 'ten'"),
    ({"grpo": {"batch_size": 6, "num_generations": 4}}, "multiple of num_generations"),
    ({"noise": {"sigma_start": 0.001, "sigma_end": 0.01}}, "sigma_end 0.01 > sigma_start 0.001"),
    ({"noise": {"sigma_start": -0.1}}, "noise.sigma_start: Input should be greater than or equal to 0"),
    ({"noise": {"sigma_end": -0.1}}, "noise.sigma_end: Input should be greater than or equal to 0"),
    ({"noise": {"num_stages": 0}}, "num_stages"),
    ({"grpo": {"steps": 5}, "noise": {"num_stages": 10}}, "num_stages 10 > grpo.steps 5"),
    ({"eval": {"samples": 100}, "task": {"test_size": 64}}, "eval.samples 100 > task.test_size 64"),
    ({"eval": {"samples": 16, "final_samples": 8}}, "eval.final_samples 8 < eval.samples 16"),
    ({"eval": {"samples": 16, "final_samples": 128}, "task": {"test_size": 64}}, "eval.final_samples 128 > task.test_size"),
    ({"engine": "verl", "eval": {"samples": 16, "final_samples": 32}}, "verl engine validates one fixed set"),
    ({"eval": {"endpoint_only": True}}, "eval.endpoint_only: set eval.final_samples too"),
    ({"engine": "deepspeed"}, "engine: Input should be 'trl' or 'verl'"),
    ({"quant": {"format": "mxfp3"}}, "mxfp3"),
    ({"quant": {"mode": "w8a8"}}, "w8a8"),
    ({"task": {"name": "mmlu"}}, "task.name"),
    ({"task": {"difficulty": "hard"}}, "task.difficulty must be one of ['multi_step', 'one_step', 'echo']"),
    ({"task": {"instruction": "Answer with the number."}}, "task.instruction must ask for the answer after '####'"),
    ({"quant": {"exclude": ["("]}}, "quant.exclude: bad regex"),
    ({"seed": -1}, "seed"),
    ({"lora": {"r": -1}}, "lora.r: Input should be greater than or equal to 0"),
    ({"lora": {"r": 0}}, "lora.r=0 (full fine-tuning, no adapters) needs engine verl"),
    ({"grpo": {"matmul_dtype": "float16"}}, "grpo.matmul_dtype must be one of ['auto', 'float32', 'bfloat16']"),
    ({"grpo": {"dtype": "bfloat16", "matmul_dtype": "float32"}}, "grpo.matmul_dtype=float32 needs grpo.dtype=float32"),
])
def test_bad_configs_are_named(data, message):
    with pytest.raises(SrddError) as err:
        load_run_config(data)
    assert message in str(err.value)


def test_bad_set_syntax():
    with pytest.raises(SrddError, match="KEY=VALUE"):
        load_run_config(None, ["grpo.steps"])
    with pytest.raises(SrddError, match="not a section"):
        load_run_config(None, ["seed.x=1"])


def test_layers_the_model_lacks():
    for noise in ({"layer_multipliers": {9: 1.0}}, {"target_layers": [0, 3]},
                  {"zone_overrides": [{"name": "z", "layers": [2, 5], "sigma_start": 0.05, "sigma_end": 0.01}]}):
        cfg = load_run_config({"noise": noise})
        with pytest.raises(SrddError, match="has 3 decoder layers"):
            check_against_model(cfg, 3)
    check_against_model(load_run_config({"noise": {"layer_multipliers": {0: 2.0, 2: 0.0}}}), 3)


def test_presets_resolve():
    labels = {name: load_run_config(None, preset=preset(name)).quant_label for name in PRESETS}
    assert labels == {"smoke": "mxfp4/w4a4", "learn": "mxfp4/w4a4", "demo": "nvfp4/w4a16"}  # demo: see rin_train/presets.py
    assert all(load_run_config(None, preset=preset(name)).noise.enabled for name in PRESETS)  # noise is the point
    with pytest.raises(SrddError, match="unknown preset"):
        preset("huge")


def test_suite_configs_from_calibrate_load(tmp_path):
    import subprocess
    import sys

    from tests.calibrate.conftest import srdd_doc

    scan = tmp_path / "scan.json"
    scan.write_text(json.dumps(srdd_doc()))
    r = subprocess.run([sys.executable, "-m", "srdd", "calibrate", str(scan), "-o", str(tmp_path / "m.yaml"),
                        "--suite", str(tmp_path / "suite")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    files = sorted((tmp_path / "suite").glob("*.yaml"))
    assert files
    for path in files:
        cfg = load_run_config(path)
        assert cfg.name == path.stem
        config_for_resume(json.loads(json.dumps(cfg.to_dict())))  # what --resume reads back from run.json
    variable = load_run_config(tmp_path / "suite" / "E13j-variable.yaml")
    assert variable.noise.layer_multipliers and variable.noise.multipliers_file
    with pytest.raises(SrddError):
        load_run_config({"noise": {"layer_multipliers": {0: 1.0}, "multipliers_file": str(tmp_path / "m.yaml")}})


def test_micro_batch_size_must_divide_the_batch():
    from rin_train.run_config import load_run_config

    assert load_run_config(None, ["grpo.batch_size=8", "grpo.micro_batch_size=2"]).grpo.accumulation_steps == 4
    assert load_run_config(None, ["grpo.batch_size=8"]).grpo.accumulation_steps == 1
    with pytest.raises(SrddError, match="micro_batch_size 3 must divide batch_size 8"):
        load_run_config(None, ["grpo.batch_size=8", "grpo.micro_batch_size=3"])
