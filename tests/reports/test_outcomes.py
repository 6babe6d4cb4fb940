"""Per-problem outcomes: reading eval_outcomes.jsonl, the final evaluation, flips, checks against metrics, `srdd flips`."""

import json
import os
import subprocess

import numpy as np
import pytest

from reports import outcomes
from reports.outcomes import ProblemOutcomes, final_outcomes, flips, read_outcomes
from reports.runs import load_run
from srdd.errors import SrddError

from .conftest import write_run

IDS = ["p0", "p1", "p2", "p3"]
SHA = "a" * 64


def line(step, lora="separate", strict="0110", flexible=None, *, ids=IDS, sha=SHA, quant="mxfp4/w4a4") -> dict:
    return {"step": step, "eval_quant": quant, "eval_lora": lora, "test_set_sha256": sha, "ids": list(ids),
            "strict": strict, "flexible": strict if flexible is None else flexible}


def write_outcomes(run, *records, raw: str = "") -> None:
    (run / "eval_outcomes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + raw)


def srdd(*args):
    return subprocess.run(["srdd", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_the_file_name_is_the_one_runs_write():
    from rin_train.rundir import OUTCOMES

    assert outcomes.OUTCOMES == OUTCOMES == "eval_outcomes.jsonl"


def test_lines_read_back_as_aligned_bool_arrays(tmp_path):
    write_outcomes(tmp_path, line(0, strict="0000", flexible="0100"), line(20, "merged", strict="1101"))
    first, last = read_outcomes(tmp_path)
    assert (first.step, first.eval_lora, first.ids) == (0, "separate", tuple(IDS))
    assert first.strict.dtype == np.bool_ and first.strict.tolist() == [False] * 4
    assert first.flexible.tolist() == [False, True, False, False]
    assert last.accuracy() == 0.75 and first.accuracy("flexible") == 0.25
    with pytest.raises(ValueError):  # frozen, arrays included
        last.strict[0] = False
    assert read_outcomes(tmp_path / "nothing-here") == []


@pytest.mark.parametrize("change, message", [
    ({"strict": "011"}, "strict must be a bool array of one entry per id"),
    ({"flexible": "01x0"}, "flexible must be a string of '0'/'1'"),
    ({"strict": [0, 1, 1, 0]}, "strict must be a string"),
    ({"ids": ["p0", "p0", "p2", "p3"]}, "ids repeat"),
    ({"ids": "p0p1"}, "ids is a str, not a list"),
    ({"eval_lora": "fused"}, "eval_lora is 'fused'"),
    ({"test_set_sha256": "abc"}, "not 64 lowercase hex"),
    ({"step": -1}, "step is -1"),
    ({"step": True}, "step is True"),
    ({"eval_quant": ""}, "eval_quant"),
])
def test_a_malformed_line_is_named_by_file_and_line(tmp_path, change, message):
    write_outcomes(tmp_path, line(0), {**line(10), **change})
    with pytest.raises(SrddError, match=r"eval_outcomes.jsonl:2: ") as err:
        read_outcomes(tmp_path)
    assert message in str(err.value)


def test_corrupt_missing_fields_and_non_objects_are_named(tmp_path):
    write_outcomes(tmp_path, line(0), raw='{"step": 1, "ids\n')
    with pytest.raises(SrddError, match=r"eval_outcomes.jsonl:2: corrupt line"):
        read_outcomes(tmp_path)
    write_outcomes(tmp_path, {"step": 0, "ids": IDS})
    with pytest.raises(SrddError, match=r":1: missing eval_quant, eval_lora, test_set_sha256, strict, flexible"):
        read_outcomes(tmp_path)
    write_outcomes(tmp_path, raw="[1, 2]\n")
    with pytest.raises(SrddError, match=r":1: expected a JSON object, got list"):
        read_outcomes(tmp_path)


def test_huge_binary_and_symlinked_files_are_refused_unread(tmp_path, monkeypatch):
    write_outcomes(tmp_path, *(line(s) for s in range(40)))
    monkeypatch.setattr(outcomes, "MAX_BYTES", 1000)
    with pytest.raises(SrddError, match=r"is [\d,]+ bytes, over the 1,000 an outcomes file may have"):
        read_outcomes(tmp_path)
    monkeypatch.setattr(outcomes.os, "fstat", lambda fd: type("st", (), {"st_mode": 0o100644, "st_size": 10})())
    with pytest.raises(SrddError, match="grew past 1,000 bytes while it was read"):  # checked, then bounded
        read_outcomes(tmp_path)
    monkeypatch.undo()
    (tmp_path / "eval_outcomes.jsonl").write_bytes(json.dumps(line(0)).encode() + b"\n\0\0\x89PNG")
    with pytest.raises(SrddError, match=r"is binary \(holds NUL bytes\)"):
        read_outcomes(tmp_path)
    (tmp_path / "eval_outcomes.jsonl").write_bytes(b'{"step": "\xff"}\n')
    with pytest.raises(SrddError, match="not UTF-8"):
        read_outcomes(tmp_path)
    (tmp_path / "eval_outcomes.jsonl").unlink()
    os.mkfifo(tmp_path / "eval_outcomes.jsonl")  # would block a plain open() forever
    with pytest.raises(SrddError, match="not a regular file"):
        read_outcomes(tmp_path)
    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text(json.dumps(line(0)) + "\n")
    (tmp_path / "eval_outcomes.jsonl").unlink()
    (tmp_path / "eval_outcomes.jsonl").symlink_to(elsewhere)
    with pytest.raises(SrddError, match="is a symlink"):
        read_outcomes(tmp_path)


def test_final_outcomes_is_the_last_line_at_the_largest_step(tmp_path):
    assert final_outcomes(tmp_path) is None  # an older run: no file
    write_outcomes(tmp_path)
    assert final_outcomes(tmp_path, "separate") is None  # an empty file is no outcomes either
    write_outcomes(tmp_path, line(0, strict="0000"), line(20, strict="1000"), line(10, strict="1100"),
                   line(20, strict="1110"),  # step 20 evaluated again after a resume: this one counts
                   line(20, "merged", strict="1111"))
    assert final_outcomes(tmp_path, "separate").strict.tolist() == [True, True, True, False]
    assert final_outcomes(tmp_path).accuracy() == 1.0  # merged by default, as reports compare
    with pytest.raises(ValueError, match="eval_lora"):
        final_outcomes(tmp_path, "both")


def _outcome(strict, flexible=None, sha=SHA, ids=IDS):
    return ProblemOutcomes.from_record(line(20, "merged", strict, flexible, sha=sha, ids=ids))


def test_flips_count_both_ways_and_refuse_other_test_sets():
    a, b = _outcome("0110", "1110"), _outcome("1100", "1111")
    f = flips(a, b)
    assert (f.gained, f.lost, f.both_right, f.both_wrong) == (("p0",), ("p2",), 1, 1)
    assert f.n == 4 and f.net == 0 == round(4 * (b.accuracy() - a.accuracy()))
    g = flips(a, b, "flexible")
    assert (g.gained, g.lost, g.both_right, g.both_wrong, g.net) == (("p3",), (), 3, 0, 1)
    back = flips(b, a)
    assert (back.gained, back.lost) == (f.lost, f.gained)
    with pytest.raises(SrddError, match="different test sets"):
        flips(a, _outcome("0110", sha="b" * 64))
    with pytest.raises(SrddError, match="different test sets"):  # same hash claimed, other problems
        flips(a, _outcome("0110", ids=["p1", "p0", "p2", "p3"]))
    with pytest.raises(ValueError, match="kind"):
        flips(a, b, "lenient")


def test_runs_with_outcomes_must_agree_with_their_metrics(tmp_path):
    path = write_run(tmp_path, "r-s0", seed=0, acc=[0.25, 0.5, 0.75])
    assert load_run(path, "relative_error").valid  # no file: an older run, valid
    write_outcomes(path, line(0, strict="1000"), line(10, strict="1100"), line(20, strict="1110"),
                   line(20, "merged", strict="0111"))
    assert load_run(path, "relative_error").valid
    write_outcomes(path, line(0, strict="1000"), line(10, strict="1100"), line(20, strict="1110"),
                   line(20, "merged", strict="0011"))
    assert "LoRA merged: step 20 has 0.500000 of 4 problems right, metrics.jsonl says accuracy 0.750000" in \
        load_run(path, "relative_error").reason
    write_outcomes(path, line(0, strict="1000"), line(10, strict="1100"))
    assert "LoRA separate: no line for the final evaluation at step 20 (its last is at step 10)" in \
        load_run(path, "relative_error").reason
    write_outcomes(path, line(20, strict="1110"), line(20, "merged", strict="0111", quant="nvfp4/w4a4"))
    assert "measured under nvfp4/w4a4, metrics.jsonl under mxfp4/w4a4" in load_run(path, "relative_error").reason
    write_outcomes(path, raw="not json\n")
    assert "eval_outcomes.jsonl:1: corrupt line" in load_run(path, "relative_error").reason


def test_srdd_flips_names_the_problems_that_flipped(tmp_path):
    a, b = (write_run(tmp_path, f"r-s{s}", seed=s, acc=[0.5]) for s in (0, 1))
    write_outcomes(a, line(0, strict="0110"), line(0, "merged", strict="0110", flexible="0111"))
    write_outcomes(b, line(0, strict="1100"), line(0, "merged", strict="1100", flexible="1111"))
    r = srdd("flips", a, b)
    assert r.returncode == 0, r.stderr
    assert "gained (wrong in A, right in B): 1\n  p0\n" in r.stdout
    assert "lost (right in A, wrong in B): 1\n  p2\n" in r.stdout
    assert "net +0 problems; both right 1, both wrong 1" in r.stdout and "50.0 % under mxfp4/w4a4" in r.stdout
    r = srdd("flips", a, b, "--kind", "flexible", "--lora", "separate", "--json")
    doc = json.loads(r.stdout)
    assert (doc["gained"], doc["lost"], doc["net"], doc["eval_lora"]) == (["p0"], ["p2"], 0, "separate")
    r = srdd("flips", a, b, "--kind", "flexible", "--json")
    assert (json.loads(r.stdout)["gained"], json.loads(r.stdout)["a"]["accuracy"]) == (["p0"], 0.75)


def test_srdd_flips_explains_what_it_cannot_compare(tmp_path):
    a, b, old = (write_run(tmp_path, f"r-s{s}", seed=s, acc=[0.5]) for s in (0, 1, 2))
    write_outcomes(a, line(0, "merged"))
    write_outcomes(b, line(0, "merged", sha="b" * 64))
    r = srdd("flips", a, b)
    assert r.returncode == 2 and "different test sets" in r.stderr
    r = srdd("flips", a, old)
    assert r.returncode == 2 and "has no per-problem outcomes with LoRA merged" in r.stderr
    r = srdd("flips", a, tmp_path)
    assert r.returncode == 2 and "not a run directory" in r.stderr
    assert "McNemar" in srdd("flips", "--help").stdout
