"""`srdd study run` refuses, before anything is trained, written or moved, whatever would let it escape
--runs, write through a symlink, or count a run it did not make (issue 27)."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from rin_train.rundir import RunDir
from rin_train.run_config import load_run_config
from rin_train.study.settings import build_settings, open_study
from srdd.cli import main

SETS = ["model=tiny", "grpo.steps=2"]
ARGS = [w for s in SETS for w in ("--set", s)]


def _scan(errors=(0.30, 0.45, 0.44)) -> dict:
    """A 3-layer scan with a high-error band (layers 1-2), as tests/rin_train/study uses."""
    return {"schema": "srdd.scan/v1", "model": {"name": "tiny", "num_layers": len(errors)},
            "format": {"name": "mxfp4"},
            "layers": [{"layer": i, "block_output": {"relative_error": v, "deadzone_ratio": v / 2,
                                                     "sqnr_db": 20 - 10 * v}} for i, v in enumerate(errors)]}


@pytest.fixture
def root(tmp_path):
    """tmp/suite (E13i-baseline and E13j-variable, the latter reading tmp/m.yaml), tmp/runs (a started study)."""
    (tmp_path / "scan.json").write_text(json.dumps(_scan()))
    assert main(["calibrate", str(tmp_path / "scan.json"), "-o", str(tmp_path / "m.yaml"), "--suite",
                 str(tmp_path / "suite"), "--stages", "2", "--conservative-stages", "2"]) == 0
    doc = json.loads((tmp_path / "suite" / "suite.json").read_text())
    doc["experiments"] = [e for e in doc["experiments"] if e["name"] in ("E13i-baseline", "E13j-variable")]
    (tmp_path / "suite" / "suite.json").write_text(json.dumps(doc))
    assert "multipliers_file" in (tmp_path / "suite" / "E13j-variable.yaml").read_text()
    runs = tmp_path / "runs"
    open_study(runs, *build_settings(tmp_path / "suite", runs, (0, 1), tuple(SETS)))
    return tmp_path


def _run(root, *extra):
    return ["study", "run", root / "suite", "--seeds", "0,1", "--runs", root / "runs", *ARGS, *extra]


def _set_arm_name(root, name):
    path = root / "suite" / "suite.json"
    doc = json.loads(path.read_text())
    doc["experiments"][1]["name"] = name
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("name", ["../../escape", "/abs/arm", "../victimdir", 5, None, "", ".", ".hidden",
                                  "a/b", "x\n```\n<img src=x onerror=alert(1)>", "e" * 65, "E13i-BASELINE"])
def test_an_arm_name_that_is_not_a_plain_name_is_refused(root, refused, name):
    (root / "victimdir-s0").mkdir()  # what `../victimdir` with --retry-failed used to move into runs/_failed
    (root / "victimdir-s0" / "keep.txt").write_text("the user's")
    _set_arm_name(root, name)
    refused(_run(root, "--retry-failed"), root, "arm name")  # one line: a newline in a name is shown escaped


def test_a_nan_priority_is_refused(root, refused):
    path = root / "suite" / "suite.json"
    path.write_text(path.read_text().replace('"priority": 1,', '"priority": NaN,', 1))
    assert "NaN" in path.read_text()
    refused(_run(root), root, "priority must be a finite number")


@pytest.mark.parametrize("link", ["_study/attempts.jsonl", "_study/study.lock", "_failed", "_study"])
def test_a_symlink_among_the_study_files_is_refused(root, refused, link):
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "user-file").write_text("mine\n")
    path = root / "runs" / link
    target = elsewhere if link in ("_failed", "_study") else elsewhere / "user-file"
    if link == "_study":
        os.rename(path, elsewhere / "study")
        target = elsewhere / "study"
    elif path.exists():
        path.unlink()
    path.symlink_to(target)
    refused(_run(root), root, "is a symlink")


def _fake(root, arm_file, name, seed, status="failed", reason="RuntimeError: boom", sets=SETS):
    src = root / "runs" / "_study" / "control.yaml" if arm_file == "control" else root / "suite" / arm_file
    cfg = load_run_config(src, [*sets, f"seed={seed}", "engine=trl"], name=name).to_dict()
    run = RunDir.create(root / "runs" / name, name=name, config=cfg, seed=seed)
    run.finish(status, reason)
    run.release()


@pytest.mark.parametrize("arm_file, name, seed, sets, why", [
    ("E13i-baseline.yaml", "control-s0", 0, SETS, "its config is not arm control's"),       # another arm's config
    ("control", "control-s1", 0, SETS, "it records name 'control-s1' and seed 0"),          # another seed
    ("control", "control-s0", 0, [*SETS, "lora.r=8"], "its config is not arm control's"),   # other --set
])
def test_a_run_the_study_did_not_make_is_refused_by_name(root, refused, arm_file, name, seed, sets, why):
    _fake(root, arm_file, name, seed, sets=sets)
    line = refused(_run(root, "--retry-failed"), root, f"{name} was not made by this study")
    assert why in line


def test_a_directory_without_run_json_is_not_moved_aside(root, refused):
    (root / "runs" / "control-s0").mkdir()
    (root / "runs" / "control-s0" / "notes.txt").write_text("the user's")
    refused(_run(root, "--retry-failed"), root, "control-s0 was not made by this study")


def test_an_edited_multipliers_file_is_a_new_setting(root, refused):
    doc = yaml.safe_load((root / "m.yaml").read_text())
    doc["layer_multipliers"] = {k: 5.0 for k in doc["layer_multipliers"]}
    (root / "m.yaml").write_text(yaml.safe_dump(doc))
    refused(_run(root), root, "the resolved configs of E13j-variable changed")


def test_a_study_run_of_its_own_is_accepted(root):
    """The checks above refuse only what they should: the study's own failed run passes them."""
    from rin_train.study.rundirs import refuse_foreign, plan
    from rin_train.study.settings import load_settings

    _fake(root, "control", "control-s1", 1)
    _fake(root, "E13j-variable.yaml", "E13j-variable-s0", 0)
    refuse_foreign(plan(load_settings(root / "runs"), root / "runs"))


def test_a_run_recorded_before_a_config_key_existed_is_the_studys_own(root):
    """A key added to the config schema after a run was recorded (at its default, which is what the run ran
    with) is no difference: the committed SmolLM2 study's control-s0 predates grpo.micro_batch_size."""
    from rin_train.study.rundirs import refuse_foreign, plan
    from rin_train.study.settings import load_settings

    _fake(root, "control", "control-s1", 1)
    run_json = root / "runs" / "control-s1" / "run.json"
    doc = json.loads(run_json.read_text())
    assert doc["config"]["grpo"].pop("micro_batch_size") is None
    run_json.write_text(json.dumps(doc))
    refuse_foreign(plan(load_settings(root / "runs"), root / "runs"))


@pytest.mark.parametrize("where, expect", [("runs/report", "overlaps --runs"), ("runs", "overlaps --runs"),
                                           (".", "overlaps --runs"), ("notes", "holds no report"),
                                           ("other-report", "holds the report of other runs")])
def test_a_report_dir_that_is_not_the_studys_is_refused_before_any_run(root, refused, where, expect):
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("mine")
    (root / "other-report").mkdir()
    (root / "other-report" / "report.json").write_text(json.dumps({"runs": [{"name": "someone-s0"}]}))
    refused(_run(root, "--report-dir", root / where), root, expect)


@pytest.mark.parametrize("seeds, expect", [("0,4294967296", "distinct integers from 0 to 4294967295"),
                                           ("\u0663", "comma-separated integers"), ("1_0", "comma-separated")])
def test_seeds_are_checked_whole_before_any_run(root, refused, seeds, expect):
    argv = _run(root)
    argv[argv.index("--seeds") + 1] = seeds
    refused(argv, root, expect)


def test_status_reads_hand_edited_runs_without_a_traceback(root, capsys):
    """run.json fields of the wrong type and a binary metrics.jsonl: `study status` still prints its table
    (the run shows what could be read) and exits 0 (issue 27)."""
    _fake(root, "control", "control-s0", 0, status="complete", reason=None)
    _fake(root, "E13j-variable.yaml", "E13j-variable-s0", 0)
    run_json = root / "runs" / "control-s0" / "run.json"
    doc = json.loads(run_json.read_text())
    doc.update(started=5, finished=["x"], resumed="never")
    run_json.write_text(json.dumps(doc))
    (root / "runs" / "E13j-variable-s0" / "metrics.jsonl").write_bytes(b"\xff\xfe\x00binary")
    assert main(["study", "status", str(root / "runs")]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err and err == "", err
    rows = {line.split()[0] + line.split()[1]: line for line in out.splitlines() if line.startswith(("control", "E13j"))}
    assert "complete" in rows["control0"] and rows["control0"].rstrip().endswith("—")  # no wall time to show
    assert "failed" in rows["E13j-variable0"] and "—/2" in rows["E13j-variable0"]
