"""Built-in problems and user GSM8K files (verl parquet, JSONL)."""

import json

import pandas as pd
import pytest

from rin_train.run_config import TaskConfig
from rin_train.tasks import INSTRUCTION, Example, drop_long_prompts, gsm8k_answer, load_task, read_task_file
from srdd.errors import SrddError


def test_builtin_split_is_deterministic_and_disjoint():
    train, test = load_task(TaskConfig(train_size=40, test_size=10), seed=0)
    assert len(train) == 40 and len(test) == 10
    assert {e.question for e in train}.isdisjoint({e.question for e in test})
    assert all(e.question.endswith(INSTRUCTION) and e.answer.lstrip("-").isdigit() for e in train)
    train1, test1 = load_task(TaskConfig(train_size=40, test_size=10), seed=1)
    assert test1 == test and train1 != train  # the test set never depends on the seed
    assert load_task(TaskConfig(train_size=40, test_size=10), seed=0) == (train, test)


def test_one_step_difficulty_and_instruction():
    """The easy level: one operation, its own disjoint split, the configured instruction on every prompt."""
    cfg = TaskConfig(train_size=60, test_size=30, difficulty="one_step", instruction="Reply as '#### n'.")
    train, test = load_task(cfg, seed=0)
    assert {e.question for e in train}.isdisjoint({e.question for e in test})
    assert all(e.question.endswith(" Reply as '#### n'.") for e in train + test)
    ops = {"gets": lambda a, b: a + b, "gives": lambda a, b: a - b, "boxes": lambda a, b: a * b}
    for e in train + test:  # one operation on the question's two numbers
        a, b = (int(w) for w in e.question.split() if w.isdigit())
        (op,) = [f for word, f in ops.items() if f" {word} " in e.question]
        assert int(e.answer) == op(a, b) >= 0
    other = load_task(TaskConfig(train_size=60, test_size=30, difficulty="one_step",
                                 instruction="Reply as '#### n'."), seed=1)
    assert other[1] == test and other[0] != train  # the test set never depends on the seed
    default_train, _ = load_task(TaskConfig(train_size=60, test_size=30), seed=0)
    assert {e.question for e in default_train}.isdisjoint({e.question for e in train})


def test_echo_difficulty_and_an_exhausted_split():
    """The learnable level: the answer is the question's one digit; a split has finitely many such questions."""
    train, test = load_task(TaskConfig(train_size=200, test_size=50, difficulty="echo"), seed=0)
    assert {e.question for e in train}.isdisjoint({e.question for e in test})
    for e in train + test:
        (digit,) = [w for w in e.question.split() if w.isdigit()]
        assert e.answer == digit and len(digit) == 1
    assert {e.answer for e in train} == {str(d) for d in range(10)}
    with pytest.raises(SrddError, match="task: the test split has only 312 distinct echo problems, 400 were"):
        load_task(TaskConfig(train_size=10, test_size=400, difficulty="echo"), seed=0)


def test_difficulty_and_instruction_are_for_the_builtin_task(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"question": "Q?", "answer": "#### 1"}) + "\n")
    with pytest.raises(SrddError, match="task.difficulty and task.instruction are for the built-in"):
        TaskConfig(name="gsm8k", train_file=str(path), test_file=str(path), difficulty="one_step")
    with pytest.raises(SrddError, match="task.difficulty and task.instruction are for the built-in"):
        TaskConfig(name="gsm8k", train_file=str(path), test_file=str(path), instruction="#### n")


def _verl_parquet(path, rows):
    pd.DataFrame({
        "data_source": ["openai/gsm8k"] * len(rows),
        "prompt": [[{"role": "user", "content": f"{q} {INSTRUCTION}"}] for q, _ in rows],
        "ability": ["math"] * len(rows),
        "reward_model": [{"style": "rule", "ground_truth": a} for _, a in rows],
        "extra_info": [{"split": "train", "index": i} for i in range(len(rows))],
    }).to_parquet(path)
    return path


def test_verl_parquet_layout(tmp_path):
    path = _verl_parquet(tmp_path / "train.parquet", [("What is 2+3?", "5"), ("Half of 1,000?", "500")])
    examples = read_task_file(path)
    assert examples[0].messages() == [{"role": "user", "content": f"What is 2+3? {INSTRUCTION}"}]
    assert [e.answer for e in examples] == ["5", "500"]


def test_jsonl_gsm8k(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"question": "Q1?", "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
        {"question": "Q2?", "answer": "so\n#### 1,200"},
    ]) + "\n")
    examples = read_task_file(path)
    assert [e.answer for e in examples] == ["7", "1200"]
    assert examples[0].messages()[-1]["content"] == f"Q1? {INSTRUCTION}"
    cfg = TaskConfig(name="gsm8k", train_file=str(path), test_file=str(path), train_size=1, test_size=None)
    train, test = load_task(cfg, seed=0)
    assert len(train) == 1 and len(test) == 2


def test_bad_task_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q?"}\n')
    with pytest.raises(SrddError, match=r"bad.jsonl:1"):
        read_task_file(bad)
    wrong = tmp_path / "wrong.parquet"
    pd.DataFrame({"question": ["q"], "answer": ["1"]}).to_parquet(wrong)
    with pytest.raises(SrddError, match="verl's layout"):
        read_task_file(wrong)
    with pytest.raises(SrddError, match="does not exist"):
        TaskConfig(name="gsm8k", train_file=str(tmp_path / "none.parquet"), test_file=str(bad))
    with pytest.raises(SrddError, match="needs task.train_file"):
        TaskConfig(name="gsm8k")
    assert gsm8k_answer("blah #### -12") == "-12"


def test_long_prompts_are_dropped_with_a_count(capsys):
    class Tok:
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return messages[-1]["content"]

        def __call__(self, text, add_special_tokens):
            return {"input_ids": text.split()}

    short, long = Example.from_question("a b", 1), Example.from_question("a " * 50, 2)
    assert drop_long_prompts([short, long], Tok(), 30, "train set") == [short]
    assert "dropped 1 of 2" in capsys.readouterr().out
    with pytest.raises(SrddError, match="every prompt"):
        drop_long_prompts([long], Tok(), 30, "train set")
