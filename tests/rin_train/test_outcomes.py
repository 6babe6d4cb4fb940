"""Writing per-problem outcomes: stable problem ids, the test set's hash, append-only lines in the run dir."""

import json

import pytest

from rin_train.outcomes import OutcomeLog, sha256_of_test_set
from rin_train.rundir import RunDir
from rin_train.tasks import Example, problem_ids
from srdd.errors import SrddError

CONFIG = {"quant": {"format": "mxfp4", "mode": "w4a4"}, "noise": {"enabled": False}}
PROBLEMS = [Example.from_question(f"Ava has {n} books. How many?", n) for n in (3, 5, 8)]
LABEL = {"eval_quant": "mxfp4/w4a4", "eval_lora": "separate"}


def test_problem_ids_follow_the_prompt_not_the_position():
    ids = problem_ids(PROBLEMS)
    assert len(set(ids)) == 3 and all(len(i) == 16 for i in ids)
    assert problem_ids(PROBLEMS[::-1]) == ids[::-1]  # reordering or subsetting keeps each problem's id
    assert problem_ids(PROBLEMS[1:2]) == ids[1:2]
    other = Example.from_question("Ava has 3 books. How many?", 3, instruction="Answer as '#### n'.")
    assert problem_ids([other]) != ids[:1]  # another prompt is another problem
    again = problem_ids([PROBLEMS[0], PROBLEMS[1], PROBLEMS[0], PROBLEMS[0]])
    assert again == [ids[0], ids[1], f"{ids[0]}#2", f"{ids[0]}#3"]  # repeats stay distinct


def test_the_test_set_hash_covers_ids_prompts_answers_and_order():
    ids = problem_ids(PROBLEMS)
    sha = sha256_of_test_set(ids, PROBLEMS)
    assert len(sha) == 64 and sha == sha256_of_test_set(list(ids), list(PROBLEMS))
    wrong_answer = [*PROBLEMS[:2], Example(PROBLEMS[2].prompt, "9")]
    assert sha256_of_test_set(ids, wrong_answer) != sha
    assert sha256_of_test_set(ids[::-1], PROBLEMS[::-1]) != sha
    assert sha256_of_test_set(ids[:2], PROBLEMS[:2]) != sha
    with pytest.raises(ValueError, match="2 ids for 3 examples"):
        sha256_of_test_set(ids[:2], PROBLEMS)


def test_each_evaluation_appends_one_line_and_never_rewrites(tmp_path):
    run = RunDir.create(tmp_path / "r", name="r", config=CONFIG, seed=0)
    assert not run.outcomes_path.exists()  # made by the first evaluation, so a run without one never measured any
    log = OutcomeLog.for_test_set(run, PROBLEMS)
    log.append(0, LABEL, {"strict": [False, True, False], "flexible": [True, True, False]})
    first = run.outcomes_path.read_bytes()
    log.append(5, {**LABEL, "eval_lora": "merged"}, {"strict": [True] * 3, "flexible": [True] * 3})
    assert run.outcomes_path.read_bytes().startswith(first)
    lines = [json.loads(x) for x in run.outcomes_path.read_text().splitlines()]
    assert lines[0] == {"step": 0, "eval_quant": "mxfp4/w4a4", "eval_lora": "separate",
                        "test_set_sha256": sha256_of_test_set(problem_ids(PROBLEMS), PROBLEMS),
                        "ids": problem_ids(PROBLEMS), "strict": "010", "flexible": "110"}
    assert (lines[1]["step"], lines[1]["eval_lora"], lines[1]["strict"]) == (5, "merged", "111")
    with pytest.raises(ValueError, match="2 flexible outcomes for a test set of 3 problems"):
        log.append(6, LABEL, {"strict": [True] * 3, "flexible": [True] * 2})
    assert len(run.outcomes_path.read_text().splitlines()) == 2  # a refused line leaves nothing
    with pytest.raises(ValueError, match="integer 'step'"):
        run.append_outcomes({"ids": []})
    with pytest.raises(ValueError, match="distinct problem ids"):
        OutcomeLog(run, ("a", "a"), "0" * 64)
    run.release()


def test_resume_cuts_a_torn_outcome_line_and_refuses_a_symlinked_file(tmp_path):
    run = RunDir.create(tmp_path / "r", name="r", config=CONFIG, seed=0)
    OutcomeLog.for_test_set(run, PROBLEMS).append(0, LABEL, {"strict": [True] * 3, "flexible": [True] * 3})
    whole = run.outcomes_path.read_text()
    with open(run.outcomes_path, "a") as fh:
        fh.write('{"step": 2, "eval_qu')
    run.release()
    RunDir.open_for_resume(run.path).release()
    assert run.outcomes_path.read_text() == whole
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text("")
    run.outcomes_path.unlink()
    run.outcomes_path.symlink_to(elsewhere)
    with pytest.raises(SrddError, match="eval_outcomes.jsonl is a symlink"):
        RunDir.open_for_resume(run.path)
    with pytest.raises(OSError):  # never written through, even by a caller that skipped the check
        run.append_outcomes({"step": 1})
    assert elsewhere.read_text() == ""
