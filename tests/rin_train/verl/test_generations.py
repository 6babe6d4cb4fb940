"""verl runs' per-problem outcomes: verl's validation dumps (written as verl 0.9.1 writes them, tests.rin_train.verl.
verl_dumps) matched to the test problems by prompt text and scored into the TRL engine's eval_outcomes.jsonl lines,
through `srdd ingest verl` and the launcher; what reports and `srdd flips` make of them; and every refusal."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from reports.outcomes import outcomes_problem, read_outcomes
from reports.runs import load_run
from rin_train.outcomes import sha256_of_test_set
from rin_train.presets import preset
from rin_train.run_config import load_run_config
from rin_train.rundir import RunDir
from rin_train.tasks import Example, load_task, problem_ids, read_task_file
from rin_train.verl import engine as engine_verl
from rin_train.verl.data import write_task_files
from rin_train.verl.generations import GENERATIONS, RenderedProblems
from srdd.cli import main
from srdd.errors import SrddError
from srdd.tiny import ECHO_WORDS, build_tiny_tokenizer
from tests.rin_train.verl.verl_dumps import verl_input, write_dump

CONFIG = Path(__file__).parent / "fixtures" / "verl_run.yaml"
ACC = "val-core/openai/gsm8k/acc/mean@1"
STRICT = {0: {0, 3}, 2: {0, 1, 3, 6}}
"""Step -> the problems (test-set indices) whose dumped output is strictly right."""
FLEXIBLE_ONLY = {0: {5}, 2: {2}}
"""Step -> the problems whose output has the right number, but not after '####'."""


def _output(i: int, answer: str, step: int) -> str:
    if i in STRICT[step]:
        return f"so the total is #### {answer}"
    return f"the answer is {answer}" if i in FLEXIBLE_ONLY[step] else "#### -1"


def _bits(step: int, kind: str, n: int = 8) -> str:
    hits = STRICT[step] | (FLEXIBLE_ONLY[step] if kind == "flexible" else set())
    return "".join("1" if i in hits else "0" for i in range(n))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def test_set(tmp_path_factory) -> tuple[Path, list[Example]]:
    """The smoke preset's 8 test problems as a data.val_files parquet, and as read back from it."""
    cfg = load_run_config(preset=preset("smoke"), name="g")
    train, test = load_task(cfg.task, cfg.seed)
    files = write_task_files(train[:4], test[: cfg.eval.samples], "openai/gsm8k", tmp_path_factory.mktemp("data"))
    return files.test, read_task_file(files.test)


@pytest.fixture
def verl_run(tmp_path, tokenizer, test_set) -> dict[str, Path]:
    """What a finished verl run leaves: its file logger's JSONL and its validation dumps (steps 0 and 2)."""
    _, test = test_set
    dumps = tmp_path / "val_generations"
    log = []
    for step in (0, 1, 2):
        data = {"critic/score/mean": 0.5} if step else {}
        if step in STRICT:
            write_dump(dumps, step, [(verl_input(tokenizer, e.messages()), _output(i, e.answer, step), e.answer)
                                     for i, e in enumerate(test)])
            data[ACC] = len(STRICT[step]) / len(test)
        log.append(json.dumps({"step": step, "data": data}))
    (tmp_path / "metrics.jsonl").write_text("\n".join(log) + "\n")
    return {"log": tmp_path / "metrics.jsonl", "dumps": dumps}


def _ingest(verl_run: dict, out: Path, val_file: Path, model: Path, *extra: str) -> int:
    return main(["ingest", "verl", str(verl_run["log"]), "-o", str(out), "--quant", "mxfp4/w4a4", "--config",
                 str(CONFIG), "--generations", str(verl_run["dumps"]), "--val-file", str(val_file),
                 "--model", str(model), *extra])


def _lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "eval_outcomes.jsonl").read_text().splitlines()]


def test_ingest_writes_the_trl_engines_outcome_lines_from_verls_dumps(verl_run, test_set, tiny_model_dir, tmp_path):
    val_file, test = test_set
    first = (verl_run["dumps"] / "0.jsonl").read_text().splitlines()
    assert [json.loads(line)["gts"] for line in first] != [e.answer for e in test]  # verl's order is not ours
    out = tmp_path / "runs" / "v-s0"
    assert _ingest(verl_run, out, val_file, tiny_model_dir) == 0
    ids = problem_ids(test)
    expected = [{"step": step, "eval_quant": "mxfp4/w4a4", "eval_lora": "separate",
                 "test_set_sha256": sha256_of_test_set(ids, test), "ids": ids,
                 "strict": _bits(step, "strict"), "flexible": _bits(step, "flexible")} for step in (0, 2)]
    assert _lines(out) == expected
    assert [list(line) for line in _lines(out)] == [list(line) for line in expected]  # the TRL engine's key order
    records = RunDir.open(out).logged_steps()
    assert [(r["step"], r["accuracy"], r["eval_lora"]) for r in records] == [(0, 0.25, "separate"), (1, None, None),
                                                                             (2, 0.5, "separate")]
    assert RunDir.open(out).info()["config"]["source_generations"] == str(verl_run["dumps"])
    # reports read the file, and its final line agrees with metrics.jsonl
    assert [o.accuracy() for o in read_outcomes(out)] == [0.25, 0.5]
    assert outcomes_problem(out, {"separate": (2, 0.5)}, "mxfp4/w4a4") is None
    assert "eval_outcomes" not in (load_run(out, "relative_error", accuracy="separate").reason or "")


def test_srdd_flips_compares_ingested_verl_runs_as_trained(verl_run, test_set, tiny_model_dir, tokenizer, tmp_path):
    val_file, test = test_set
    a, b = tmp_path / "a", tmp_path / "b"
    assert _ingest(verl_run, a, val_file, tiny_model_dir) == 0
    samples = [(verl_input(tokenizer, e.messages()), _output(i, e.answer, 2), e.answer) for i, e in enumerate(test)]
    samples[1] = (samples[1][0], "#### -1", samples[1][2])  # b loses problem 1 ...
    samples[7] = (samples[7][0], f"#### {test[7].answer}", samples[7][2])  # ... and gains problem 7
    write_dump(verl_run["dumps"], 2, samples, seed=1)
    assert _ingest(verl_run, b, val_file, tiny_model_dir) == 0
    ids = problem_ids(test)
    r = subprocess.run(["srdd", "flips", str(a), str(b), "--lora", "separate", "--json"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["gained"], doc["lost"], doc["net"], doc["n"]) == ([ids[7]], [ids[1]], 0, 8)
    r = subprocess.run(["srdd", "flips", str(a), str(b)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "LoRA separate only" in r.stderr and "--lora separate" in r.stderr


def _alter_line(path: Path, index: int, **changes) -> None:
    lines = path.read_text().splitlines()
    lines[index] = json.dumps({**json.loads(lines[index]), **changes})
    path.write_text("\n".join(lines) + "\n")


def _refusal_cases():
    def other_input(run):
        _alter_line(run["dumps"] / "2.jsonl", 3, input="user: a prompt of another test set assistant:")

    def fewer_samples(run):
        path = run["dumps"] / "2.jsonl"
        path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))

    def other_accuracy(run):
        lines = run["log"].read_text().splitlines()
        lines[2] = json.dumps({"step": 2, "data": {ACC: 0.375}})
        run["log"].write_text("\n".join(lines) + "\n")

    def other_reward(run):
        line = json.loads((run["dumps"] / "0.jsonl").read_text().splitlines()[0])
        _alter_line(run["dumps"] / "0.jsonl", 0, acc=1.0 - line["acc"])

    def no_dump(run):
        (run["dumps"] / "2.jsonl").unlink()

    return [(other_input, "matches no test problem"), (fewer_samples, "holds 7 samples for a test set of 8 problems"),
            (other_accuracy, "but verl logged accuracy 0.375 for step 2"), (other_reward, "verl's reward gave acc"),
            (no_dump, "verl wrote no validation dump for step 2")]


@pytest.mark.parametrize("spoil, message", _refusal_cases(), ids=lambda x: getattr(x, "__name__", ""))
def test_dumps_that_do_not_fit_are_refused_and_nothing_is_written(verl_run, test_set, tiny_model_dir, tmp_path,
                                                                  capsys, spoil, message):
    spoil(verl_run)
    out = tmp_path / "r"
    assert _ingest(verl_run, out, test_set[0], tiny_model_dir) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_dump_flags_come_together(verl_run, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["ingest", "verl", str(verl_run["log"]), "-o", str(out), "--quant", "mxfp4/w4a4", "--config",
                 str(CONFIG), "--generations", str(verl_run["dumps"])]) == 2
    assert "(missing: --val-file, --model)" in capsys.readouterr().err and not out.exists()


def test_problems_a_tokenizer_renders_alike_are_refused():
    """tiny-echo's 17-token vocabulary drops the words of a question: two problems with one answer then
    look the same in verl's dump, and which sample is whose cannot be told."""
    tokenizer = build_tiny_tokenizer(ECHO_WORDS)
    a, b = Example.from_question("Ava has 7 books.", 7), Example.from_question("Bo has 7 cups.", 7)
    with pytest.raises(SrddError, match="render alike under the model's tokenizer"):
        RenderedProblems.render([a, b], tokenizer)
    RenderedProblems.render([a, Example.from_question("Bo has 8 cups.", 8)], tokenizer)  # the answers tell them apart


def test_a_prompt_twice_in_the_test_set_takes_its_samples_in_order(tokenizer, tmp_path):
    from rin_train.verl.generations import read_dump

    e = Example.from_question("Tom has 3 apples .", 3)
    test = RenderedProblems.render([e, e], tokenizer)
    write_dump(tmp_path, 0, [(verl_input(tokenizer, e.messages()), f"#### {3 + i}", "3") for i in range(2)])
    samples = read_dump(tmp_path / "0.jsonl", 0)
    assert sorted(test.assign(samples, "dump")) == [0, 1] and problem_ids([e, e])[1].endswith("#2")


def test_a_launched_run_without_dumps_says_it_has_no_outcomes(tiny_model_dir, test_set, tmp_path):
    """A run prepared before srdd set trainer.validation_data_dir: the accuracies stand, the outcomes are absent."""
    cfg = load_run_config(preset=preset("smoke"), name="old", sets=["engine=verl"])
    run = RunDir.create(tmp_path / "old", name="old", config=cfg.to_dict(), seed=cfg.seed)
    shutil.copytree(tiny_model_dir, run.path / "model")
    (run.path / "data").mkdir()
    shutil.copy(test_set[0], run.path / "data" / "test.parquet")
    run.append_metrics({"step": 0, "accuracy": 0.25, "accuracy_flexible": 0.25})
    said = engine_verl.collect_outcomes(cfg, run)
    assert said.startswith("per-problem outcomes: none, so this run has no eval_outcomes.jsonl")
    assert f"{run.path.resolve() / GENERATIONS / '0.jsonl'} does not exist" in said
    assert not run.outcomes_path.exists()
