"""Every validation of a TRL run stores its per-problem outcomes, and they add up to its accuracies."""

import json
import signal
import subprocess
import sys

import rin_train.evaluate as evaluate
from reports.outcomes import final_outcomes, read_outcomes
from reports.runs import load_run
from rin_train.presets import preset
from rin_train.run_config import load_run_config
from rin_train.rundir import RunDir
from rin_train.tasks import load_task, problem_ids
from rin_train.train import run_training
from srdd.cli import main

# The random tiny model never answers right: score its answers by a hash instead, so every evaluation
# has a mix of right and wrong problems, and strict differs from flexible.
VARIED_REWARDS = """
import zlib
import rin_train.evaluate as ev
ev.strict_reward = lambda text, answer: float(zlib.crc32(f"{text}|{answer}".encode()) % 2)
ev.flexible_reward = lambda text, answer: float(zlib.crc32(f"{text}|{answer}".encode()) % 3 != 0)
"""


def _evaluations(records):
    """(step, eval_lora, metrics of that evaluation) in the order the run logged them."""
    for r in records:
        if r["accuracy"] is not None:
            yield r["step"], r["eval_lora"], r
        if "eval_merged" in r:
            yield r["step"], "merged", r["eval_merged"]


def test_each_validation_writes_the_outcomes_its_accuracies_are_the_means_of(tmp_path, monkeypatch):
    import zlib

    monkeypatch.setattr(evaluate, "strict_reward", lambda t, a: float(zlib.crc32(f"{t}|{a}".encode()) % 2))
    monkeypatch.setattr(evaluate, "flexible_reward", lambda t, a: float(zlib.crc32(f"{t}|{a}".encode()) % 3 != 0))
    cfg = load_run_config(None, [], preset=preset("smoke"))
    run = run_training(cfg, tmp_path / "run")
    assert run.status == "complete"
    lines = read_outcomes(run.path)
    evaluations = list(_evaluations(run.logged_steps()))
    assert [(o.step, o.eval_lora) for o in lines] == [(s, lora) for s, lora, _ in evaluations] == [
        (0, "separate"), (2, "separate"), (3, "separate"), (3, "merged")]
    test = load_task(cfg.task, cfg.seed)[1][: cfg.eval.samples]
    for o, (_, _, metrics) in zip(lines, evaluations):
        assert o.ids == tuple(problem_ids(test)) and o.eval_quant == metrics["eval_quant"] == "mxfp4/w4a4"
        assert o.accuracy("strict") == metrics["accuracy"] and o.accuracy("flexible") == metrics["accuracy_flexible"]
        assert o.n == metrics["eval_samples"]
    assert 0 < lines[0].accuracy() < 1 and (lines[0].strict != lines[0].flexible).any()  # the test can see a mix-up
    assert len({o.test_set_sha256 for o in lines}) == 1
    final = final_outcomes(run.path)
    assert (final.step, final.eval_lora, final.strict.tolist()) == (3, "merged", lines[-1].strict.tolist())
    assert "per_problem" not in (run.path / "metrics.jsonl").read_text()  # outcomes live in their own file
    assert load_run(run.path, "relative_error").valid


KILL_IN_MERGED_VALIDATION = VARIED_REWARDS + """
import os
inner = ev.evaluate
def dying(*a, **k):
    if k["eval_lora"] == "merged":
        os.kill(os.getpid(), signal)
    return inner(*a, **k)
import rin_train.trl.engine as e
e.evaluate = dying
from srdd.cli import main
raise SystemExit(main(['train', '--preset', 'smoke', '--out', out]))
"""


def test_a_resumed_run_keeps_every_line_and_its_last_evaluation_counts(tmp_path):
    """Killed between the final step's two validations: the separate one is on file, its metrics line is not.
    The resume validates step 3 again; the earlier line stays (append-only) and the later one counts."""
    out = tmp_path / "run"
    script = f"signal, out = {int(signal.SIGKILL)}, {str(out)!r}\n" + KILL_IN_MERGED_VALIDATION
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=500)
    assert r.returncode == -9, r.stderr[-2000:]
    before = (out / "eval_outcomes.jsonl").read_text()
    assert [(o.step, o.eval_lora) for o in read_outcomes(out)] == [(0, "separate"), (2, "separate"), (3, "separate")]
    assert main(["train", "--resume", "--out", str(out)]) == 0
    assert (out / "eval_outcomes.jsonl").read_text().startswith(before)
    lines = read_outcomes(out)
    assert [(o.step, o.eval_lora) for o in lines[3:]] == [(3, "separate"), (3, "merged")]
    final = RunDir.open(out).logged_steps()[-1]
    assert lines[2].accuracy() != final["accuracy"]  # the resumed process scores for real: the tiny model gets 0
    assert final_outcomes(out, "separate").accuracy() == final["accuracy"]
    assert final_outcomes(out, "merged").accuracy() == final["eval_merged"]["accuracy"]
    assert load_run(out, "relative_error").valid
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
