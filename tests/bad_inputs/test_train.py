"""`srdd train` refuses bad configs and run directories in one line, before a run directory exists."""

from __future__ import annotations

import json

import pytest

SET_CASES = [
    ("grpo.learning_rate=.inf", "grpo.learning_rate: Input should be a finite number, got inf"),
    ("grpo.beta=.nan", "grpo.beta: Input should be a finite number, got nan"),
    ("grpo.temperature=.inf", "grpo.temperature: Input should be a finite number"),
    ("grpo.stall_timeout_s=.inf", "grpo.stall_timeout_s: Input should be a finite number"),
    ("seed=1e23", "seed: Input should be a valid integer, got '1e23'"),
    ("seed=100000000000000000000000", "seed: Input should be less than or equal to 4294967295"),
    ("seed=-1", "seed: Input should be greater than or equal to 0"),
    ("noise.zone_overrides=[{name: z, layers: abc, sigma_start: 0.05, sigma_end: 0.01}]",
     "noise.zone_overrides[0].layers: Input should be a valid list"),
    ("noise.layer_multipliers={1.7: 3}", "noise.layer_multipliers[1.7] (key): Input should be a valid integer"),
    ("noise.layer_multipliers={0: .nan}", "noise.layer_multipliers[0]: Input should be a finite number"),
    ("noise.sigma_start=.nan", "noise.sigma_start: Input should be a finite number"),
    ("noise.target_layers=[a]", "noise.target_layers[0]: Input should be a valid integer"),
    ("noise.num_stages=1e9", "noise.num_stages: Input should be a valid integer"),
    ("grpo.steps='3'", "grpo.steps: Input should be a valid integer, got '3'"),
    ("grpo.steps=1.5", "grpo.steps: Input should be a valid integer, got 1.5"),
    ("grpo.steps=true", "grpo.steps: Input should be a valid integer, got True"),
    ("grpo.max_completion_length=1000000000", "grpo.max_completion_length: Input should be less than or equal"),
    ("task.train_size=1000000000000", "task.train_size: Input should be less than or equal"),
    ("lora.r=0", "lora.r=0 (full fine-tuning, no adapters) needs engine verl"),
    ("lora.dropout=1.0", "lora.dropout: Input should be less than 1"),
    ("eval.samples=-1", "eval.samples: Input should be greater than or equal to 1"),
    ("engine=deepspeed", "engine: Input should be 'trl' or 'verl'"),
    ("name=[a, b]", "name: Input should be a valid string"),
    ("grpo.stepz=3", "grpo: unknown key(s) ['stepz']"),
    ("noise.layer_multipliers={7: 1.0}", "noise settings name layers [7]"),
    ("lora.target_modules=[q_proj, lm_head]", "lm_head is the model's output layer"),
    ("lora.target_modules=[nosuch]", "lora.target_modules ['nosuch']"),
    ("noise.layer_multipliers={0: 1.0e+308}", "layer 0 would get sigma"),
    ("noise.layer_multipliers={1: 1000}", "layer 1 would get sigma"),
    ("noise.zone_overrides=[{name: z, layers: [1], sigma_start: 5.0, sigma_end: 0.1}]", "layer 1 would get sigma 5"),
    ("noise={a: &a [x, x, x, x, x, x, x, x, x, x], b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a], "
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b], d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c], "
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d], f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e], "
     "g: [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]}", "aliases expand to more than"),
    ("grpo.steps=" + "[" * 100_000, "nested deeper than"),
    ("name=" + "x" * 5_000_000, "characters long, more than"),
]


@pytest.mark.parametrize("assignment,expect", SET_CASES, ids=[c[0][:40] for c in SET_CASES])
def test_train_refuses_bad_sets(tmp_path, refused, assignment, expect):
    refused(["train", "--preset", "smoke", "--out", tmp_path / "run", "--set", assignment], tmp_path, expect)


def test_train_refuses_through_the_executable(tmp_path, refused):
    refused(["train", "--preset", "smoke", "--out", "run", "--set", "grpo.learning_rate=.inf"], tmp_path,
            "grpo.learning_rate: Input should be a finite number", subprocess_run=True)


@pytest.mark.parametrize("text,expect", [
    ("grpo: {learning_rate: .nan}\n", "grpo.learning_rate: Input should be a finite number"),
    ("- just\n- a list\n", "expected a mapping at the top level"),
    ("grpo: [1, 2\n", "is not valid YAML"),
    ("seed: 2026-11-29\n", "seed: Input should be a valid integer"),
    ("grpo:\n  steps: 3\n  steps: 1000000\n", "duplicate key 'steps' at line 3"),
    ("grpo: " + "{a: " * 100_000 + "1" + "}" * 100_000 + "\n", "nested deeper than 64 levels"),
    ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in
                                                      zip("abcdefgh", "bcdefghi")), "aliases expand to more than"),
    ("name: " + "x" * 5_000_000 + "\n", "characters long, more than"),
], ids=["nan", "list", "bad-yaml", "date-seed", "duplicate-key", "deep", "alias-bomb", "huge"])
def test_train_refuses_bad_config_files(tmp_path, refused, text, expect):
    (tmp_path / "c.yaml").write_text(text)
    refused(["train", tmp_path / "c.yaml", "--preset", "smoke", "--out", tmp_path / "run"], tmp_path, expect)


def _run_dir(path, info=None, metrics='{"step": 0}\n'):
    path.mkdir(parents=True)
    info = info if info is not None else {
        "schema": "srdd.run/v1", "name": "r", "status": "running", "reason": None,
        "config": {"model": "tiny", "quant": {"format": "mxfp4", "mode": "w4a4"}, "noise": {"enabled": False}}}
    (path / "run.json").write_text(json.dumps(info))
    (path / "metrics.jsonl").write_text(metrics)
    return path


def test_resume_refuses_a_run_json_without_config(tmp_path, refused):
    _run_dir(tmp_path / "run", {"schema": "srdd.run/v1", "name": "r", "status": "failed"})
    refused(["train", "--resume", "--out", tmp_path / "run"], tmp_path, "no 'config' mapping")


def test_resume_refuses_a_run_json_that_is_a_list(tmp_path, refused):
    _run_dir(tmp_path / "run", [1, 2])
    refused(["train", "--resume", "--out", tmp_path / "run"], tmp_path, "expected a JSON object, got list")


def test_resume_refuses_a_metrics_symlink(tmp_path, refused):
    (tmp_path / "elsewhere.txt").write_text("not yours\n")
    run = _run_dir(tmp_path / "run", metrics="")
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(tmp_path / "elsewhere.txt")
    refused(["train", "--resume", "--out", run], tmp_path, "metrics.jsonl is a symlink")


def test_resume_refuses_another_engine(tmp_path, refused):
    _run_dir(tmp_path / "run")
    refused(["train", "--resume", "--out", tmp_path / "run", "--engine", "verl"], tmp_path,
            "do not give CONFIG, --preset, --set, --name or --engine with it")


def test_resume_refuses_a_missing_run(tmp_path, refused):
    refused(["train", "--resume", "--out", tmp_path / "nothing"], tmp_path, "is not a run directory")


def test_train_refuses_an_existing_out_and_launch_without_verl(tmp_path, refused):
    (tmp_path / "run").mkdir()
    refused(["train", "--preset", "smoke", "--out", tmp_path / "run"], tmp_path, "already exists")
    refused(["train", "--preset", "smoke", "--out", tmp_path / "new", "--launch"], tmp_path,
            "--launch is for --engine verl")


def test_train_refuses_a_dangling_symlink_as_out(tmp_path, refused):
    (tmp_path / "run").symlink_to(tmp_path / "nowhere")
    refused(["train", "--preset", "smoke", "--out", tmp_path / "run"], tmp_path, "already exists")
