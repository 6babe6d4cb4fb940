"""rin_train.step0: a study's runs share the untrained policy's validation, and it is the one each would compute."""

import json

import pytest

from rin_train.presets import preset
from rin_train.run_config import load_run_config
from rin_train.step0 import Step0Cache
from rin_train.train import run_training
from srdd.cli import main

UNTIMED = ("wall_s", "step_s", "eval_reused_from")


def _run(tmp_path, name: str, *sets: str, cache=None):
    cfg = load_run_config(None, list(sets), preset=preset("smoke"), name=name)
    run = run_training(cfg, tmp_path / name, step0_cache=cache)
    assert run.status == "complete"
    first = run.logged_steps()[0]
    outcomes = json.loads((run.path / "eval_outcomes.jsonl").read_text().splitlines()[0])
    return first, outcomes


def _bits(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in UNTIMED}


def test_a_seed_copies_the_step0_validation_another_stored_and_it_is_the_one_it_would_compute(tmp_path, capsys):
    cache = tmp_path / "step0"
    a, a_outcomes = _run(tmp_path, "a", "seed=0", cache=cache)
    assert "eval_reused_from" not in a and len(list(cache.iterdir())) == 1
    b, b_outcomes = _run(tmp_path, "b", "seed=1", cache=cache)
    assert b["eval_reused_from"] == {"run": "a", "file": next(cache.iterdir()).name}
    assert "(run a's, the same untrained policy)" in capsys.readouterr().out
    c, c_outcomes = _run(tmp_path, "c", "seed=1")  # what seed 1 computes for itself
    assert _bits(b) == _bits(c) == _bits(a) and b_outcomes == c_outcomes == a_outcomes
    assert len(list(cache.iterdir())) == 1


def test_another_setting_or_a_damaged_file_validates_again(tmp_path):
    cache = tmp_path / "step0"
    _run(tmp_path, "a", "seed=0", cache=cache)
    other, _ = _run(tmp_path, "b", "seed=1", "eval.max_new_tokens=6", cache=cache)
    assert "eval_reused_from" not in other and len(list(cache.iterdir())) == 2
    for stored in cache.iterdir():
        stored.write_text("{not json")
    again, _ = _run(tmp_path, "c", "seed=2", cache=cache)
    assert "eval_reused_from" not in again
    kept = [p.read_text() for p in cache.iterdir()]
    assert sorted(text.startswith("{not") for text in kept) == [False, True]  # a's replaced by c's; b's as it was
    assert next(json.loads(t)["run"] for t in kept if not t.startswith("{not")) == "c"


def test_the_key_is_everything_but_the_seed_and_the_name(tmp_path):
    cfg = load_run_config(None, [], preset=preset("smoke")).to_dict()
    model = {"spec": "tiny", "files": {"model.safetensors": {"size": 1, "header_sha256": "ab"}}}
    one = Step0Cache.open(tmp_path, config={**cfg, "seed": 0, "name": "x"}, model=model, run_name="x")
    assert Step0Cache.open(tmp_path, config={**cfg, "seed": 7, "name": "y"}, model=model, run_name="y").key == one.key
    for changed in ({**cfg, "quant": {**cfg["quant"], "mode": "w4a16"}},
                    {**cfg, "noise": {**cfg["noise"], "targets": ["linear"]}}):
        assert Step0Cache.open(tmp_path, config=changed, model=model, run_name="x").key != one.key
    moved = {**model, "files": {"model.safetensors": {"size": 2, "header_sha256": "ab"}}}
    assert Step0Cache.open(tmp_path, config=cfg, model=moved, run_name="x").key != one.key
    assert one.inputs["source"] and one.inputs["cpu_isa"] and one.inputs["versions"]["torch"]


def test_the_cli_refuses_a_cache_that_is_a_file_before_loading_a_model_and_verl(tmp_path, capsys, monkeypatch):
    import rin_train.train

    def no_model(*a, **k):
        raise AssertionError("a model was loaded for a run that --step0-cache refuses")

    monkeypatch.setattr(rin_train.train, "load_policy", no_model)
    bad = tmp_path / "cache"
    bad.write_text("x")
    assert main(["train", "--preset", "smoke", "--out", str(tmp_path / "r"), "--step0-cache", str(bad)]) == 2
    assert f"--step0-cache {bad}: not a directory" in capsys.readouterr().err and not (tmp_path / "r").exists()
    assert main(["train", "--preset", "smoke", "--engine", "verl", "--out", str(tmp_path / "v"),
                 "--step0-cache", str(tmp_path / "c")]) == 2
    assert "--step0-cache is for the trl engine" in capsys.readouterr().err


@pytest.mark.parametrize("resume", [False, True])
def test_a_study_child_shares_the_studys_step0_directory(tmp_path, resume):
    from rin_train.study.child import train_argv
    from rin_train.study.rundirs import RunSpec
    from rin_train.study.settings import Arm

    spec = RunSpec(Arm("control", tmp_path / "c.yaml", "00", 2), 3, tmp_path / "runs" / "control-s3")
    argv = train_argv(spec, ["grpo.steps=2"], resume=resume)
    assert argv[argv.index("--step0-cache") + 1] == str(tmp_path / "runs" / "_study" / "step0")
