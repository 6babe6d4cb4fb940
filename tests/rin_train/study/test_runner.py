"""`srdd study`: a calibrate suite x seeds on the tiny model, run through real `srdd train` children."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from reports.runs import SEED_SUFFIX
from rin_train.run_config import load_run_config
from rin_train.rundir import RunDir
from rin_train.study.child import train_argv
from rin_train.study.layout import CONTROL
from rin_train.study.rundirs import State, inspect, plan
from rin_train.study.settings import build_settings, load_settings, open_study
from srdd.cli import main

# A run of seconds: the tiny random Llama, 2 GRPO steps, 2 validation problems, one-sample rescans.
SETS = ["model=tiny", "task.train_size=16", "task.test_size=2", "lora.r=4", "lora.alpha=8", "grpo.steps=2",
        "grpo.num_generations=2", "grpo.batch_size=2", "grpo.max_prompt_length=128", "grpo.max_completion_length=4",
        "grpo.save_every=1", "grpo.learning_rate=0.001", "eval.every=2", "eval.samples=2", "eval.max_new_tokens=4",
        "scan.samples=1", "scan.max_tokens=8"]
ARGS = [w for s in SETS for w in ("--set", s)]


def _scan_doc(rel_errors):
    def metrics(v):
        return {"relative_error": v, "deadzone_ratio": v / 2, "sqnr_db": 20 - 10 * v, "saturation_ratio": 0.0,
                "mse": 0.01, "numel": 64}

    return {"schema": "srdd.scan/v1", "tool_version": "0.1.0", "created": "2026-11-29T00:00:00+00:00",
            "model": {"name": "tiny", "path": "tiny", "num_layers": len(rel_errors),
                      "architecture": "LlamaForCausalLM", "dtype": "float32"},
            "format": {"name": "mxfp4"}, "mode": "isolated",
            "calibration": {"source": "builtin", "samples": 2, "tokens": 32, "seed": 0},
            "layers": [{"layer": i, "block_output": metrics(v)} for i, v in enumerate(rel_errors)],
            "summary": {}, "zones": [], "worst_layers": []}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """The E13 suite of a 3-layer scan (high-error band: layers 1-2), written by srdd calibrate --suite."""
    root = tmp_path_factory.mktemp("suite")
    (root / "scan.json").write_text(json.dumps(_scan_doc([0.30, 0.45, 0.44])))
    assert main(["calibrate", str(root / "scan.json"), "-o", str(root / "m.yaml"), "--suite", str(root / "study"),
                 "--stages", "2", "--conservative-stages", "2"]) == 0
    return root / "study"


@pytest.fixture
def small_suite(suite, tmp_path):
    """The same suite with one experiment (E13i-baseline): with the control, a study of two arms."""
    small = tmp_path / "study"
    small.mkdir()
    doc = json.loads((suite / "suite.json").read_text())
    doc["experiments"] = [e for e in doc["experiments"] if e["name"] == "E13i-baseline"]
    (small / "suite.json").write_text(json.dumps(doc))
    (small / "E13i-baseline.yaml").write_text((suite / "E13i-baseline.yaml").read_text())
    return small


def _steps(path):
    return [json.loads(line)["step"] for line in (path / "metrics.jsonl").read_text().splitlines()]


def _study(*args):
    return main(["study", *map(str, args)])


def _wait_for(predicate, proc, timeout=300):
    t0 = time.monotonic()
    while not predicate():
        assert proc.poll() is None, "the study ended before the awaited moment"
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.1)


# --- without training ----------------------------------------------------------------------------------

def test_the_plan_is_seed_by_seed_and_names_group_by_seed(suite, tmp_path):
    settings, control = build_settings(suite, tmp_path / "runs", (0, 1), tuple(SETS))
    names = [a.name for a in settings.arms]
    assert names[0] == CONTROL and names[1] == "E13i-baseline" and len(names) == 9
    specs = plan(settings, tmp_path / "runs", only=["E13i-high", CONTROL])
    assert [s.name for s in specs] == ["control-s0", "E13i-high-s0", "control-s1", "E13i-high-s1"]
    assert {SEED_SUFFIX.sub("", s.name) for s in specs} == {CONTROL, "E13i-high"}  # correlate's grouping
    assert [s.name for s in plan(settings, tmp_path / "runs", control=False)][:2] == ["E13i-baseline-s0",
                                                                                     "E13i-targeted-s0"]
    assert all(a.steps == 2 for a in settings.arms)
    # the control arm is the baseline with noise off, nothing else
    ctrl = yaml.safe_load(control)
    base = yaml.safe_load((suite / "E13i-baseline.yaml").read_text())
    assert ctrl["noise"] == {**base["noise"], "enabled": False} and ctrl["quant"] == base["quant"]
    argv = train_argv(specs[1], SETS, resume=False)
    assert argv[argv.index("--out") + 1] == str(tmp_path / "runs" / "E13i-high-s0") and "seed=0" in argv
    assert train_argv(specs[1], SETS, resume=True)[-3:] == ["--resume", "--out", str(tmp_path / "runs" / "E13i-high-s0")]


def test_the_study_file_names_its_files_relative_to_itself(suite, tmp_path):
    """A runs directory and its suite can be moved (or committed) together: study.json holds relative paths."""
    runs = tmp_path / "runs"
    open_study(runs, *build_settings(suite, runs, (0,), ("grpo.steps=2",)))
    doc = json.loads((runs / "_study" / "study.json").read_text())
    assert not Path(doc["suite"]).is_absolute() and not any(Path(a["config"]).is_absolute() for a in doc["arms"])
    assert dict((a["name"], a["config"]) for a in doc["arms"])["control"] == "control.yaml"
    loaded = load_settings(runs)
    assert loaded.suite == suite.resolve() and loaded.arms[0].config == (runs / "_study" / "control.yaml").resolve()
    assert {a.name: a.config for a in loaded.arms}["E13i-baseline"] == (suite / "E13i-baseline.yaml").resolve()


def test_a_preset_is_part_of_the_setting(suite, tmp_path, capsys):
    """--preset smoke fills what the suite's configs leave open; the suite's own keys still win. The study
    records the preset's version, so a later version of it cannot change what the study runs."""
    runs = tmp_path / "runs"
    settings, control = build_settings(suite, runs, (0,), ("grpo.steps=2",), "smoke")
    assert all(a.steps == 2 for a in settings.arms) and settings.preset == "smoke@1"
    argv = train_argv(plan(settings, runs)[0], settings.sets, resume=False, preset_name=settings.preset)
    assert argv[argv.index("--preset") + 1] == "smoke@1"
    open_study(runs, settings, control)
    assert json.loads((runs / "_study" / "study.json").read_text())["preset"] == "smoke@1"
    assert _study("status", runs) == 0
    assert "overrides: --preset smoke@1 --set grpo.steps=2\n" in capsys.readouterr().out
    assert _study("run", suite, "--seeds", "0", "--runs", runs, "--set", "grpo.steps=2") == 2
    assert "--preset: recorded smoke@1, now None" in capsys.readouterr().err
    assert _study("run", suite, "--seeds", "0", "--runs", tmp_path / "other", "--preset", "nosuch") == 2
    assert "unknown preset 'nosuch'" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["run", "{missing}", "--seeds", "0"], "does not exist"),
    (["run", "{empty}", "--seeds", "0"], "holds no suite.json"),
    (["run", "{suite}", "--seeds", "0,x"], "--seeds: expected comma-separated integers"),
    (["run", "{suite}", "--seeds", "1,1"], "--seeds: distinct integers from 0 to 4294967295"),
    (["run", "{suite}", "--seeds", "0,4294967296"], "--seeds: distinct integers from 0 to 4294967295"),
    (["run", "{suite}", "--seeds", "\u0663"], "--seeds: expected comma-separated integers"),
    (["run", "{suite}", "--seeds", "1_0"], "--seeds: expected comma-separated integers"),
    (["run", "{suite}", "--seeds", "0", "--only", "E13i-nope"], "--only: unknown arm(s) E13i-nope"),
    (["run", "{suite}", "--seeds", "0", "--only", "control", "--no-control"], "nothing selected"),
    (["run", "{suite}", "--seeds", "0", "--set", "seed=3"], "a study sets seed itself"),
    (["run", "{suite}", "--seeds", "0", "--set", "grpo.nope=1"], "the control arm with the study's --set: grpo"),
    (["run", "{suite}", "--seeds", "0", "--report-dir", "{missing}/report"], "--report-dir"),
    (["run", "{suite}", "--seeds", "0", "--hypotheses", "C1,C9"], "--hypotheses: unknown C9 (the hypotheses"),
    (["run", "{suite}", "--seeds", "0", "--hypotheses", "C1,C1"], "each once"),
    (["status", "{runs}"], "holds no study"),
])
def test_bad_input_is_refused_before_any_run(suite, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "suite": suite, "runs": tmp_path / "runs"}
    argv = [a.format(**{k: str(v) for k, v in paths.items()}) for a in args]
    if argv[0] == "run":
        argv += ["--runs", str(tmp_path / "runs")]
    assert _study(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("srdd study: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_a_study_is_one_setting(suite, tmp_path, capsys):
    runs = tmp_path / "runs"
    open_study(runs, *build_settings(suite, runs, (0, 1), tuple(SETS)))
    recorded = json.loads((runs / "_study" / "study.json").read_text())
    assert recorded["seeds"] == [0, 1] and recorded["sets"] == SETS
    assert open_study(runs, *build_settings(suite, runs, (0, 1), tuple(SETS))) == load_settings(runs)  # same: fine
    for seeds, sets, what in [("0,1,2", ARGS, "seeds: recorded [0, 1], now [0, 1, 2]"),
                              ("0,1", [*ARGS, "--set", "lora.r=8"], "--set: recorded")]:
        assert _study("run", suite, "--seeds", seeds, "--runs", runs, *sets) == 2
        err = capsys.readouterr().err
        assert "holds a study with other settings" in err and what in err, err
    baseline = suite / "E13i-baseline.yaml"
    original = baseline.read_text()
    try:
        baseline.write_text(original.replace("sigma_start: 0.05", "sigma_start: 0.04"))
        assert _study("run", suite, "--seeds", "0,1", "--runs", runs, *ARGS) == 2
        assert "the config files of E13i-baseline, control changed" in capsys.readouterr().err
    finally:
        baseline.write_text(original)
    assert not [p for p in runs.iterdir() if p.name != "_study"]  # nothing ran


def _fake_run(path, config, status, reason=None, steps=(), live=False):
    run = RunDir.create(path, name=path.name, config=config, seed=0)
    for rec in steps:
        run.append_metrics(rec)
    if status != "running":
        run.finish(status, reason)
    if not live:
        run.release()
    return run


def test_run_states(tmp_path):
    cfg = {"quant": {"format": "mxfp4", "mode": "w4a4"}, "noise": {"enabled": False}}
    held = _fake_run(tmp_path / "live", cfg, "running", live=True)
    _fake_run(tmp_path / "killed", cfg, "running")
    _fake_run(tmp_path / "sigterm", cfg, "failed", "terminated by SIGTERM")
    _fake_run(tmp_path / "ctrl-c", cfg, "failed", "interrupted (Ctrl-C)")
    _fake_run(tmp_path / "crash", cfg, "failed", "RuntimeError: boom")
    _fake_run(tmp_path / "disk-full", cfg, "failed", "OSError: [Errno 28] No space left on device")
    _fake_run(tmp_path / "torch-full", cfg, "failed", "RuntimeError: [enforce fail at inline_container.cc:778] . "
              "PytorchStreamWriter failed writing file data/3: file write failed")
    _fake_run(tmp_path / "invalid", cfg, "invalid", "training ended without validating the final step (2)")
    (tmp_path / "junk").mkdir()
    states = {p.name: inspect(p).state for p in tmp_path.iterdir()}
    assert states == {"live": State.LIVE, "killed": State.KILLED, "sigterm": State.INTERRUPTED,
                      "ctrl-c": State.INTERRUPTED, "disk-full": State.INTERRUPTED, "torch-full": State.INTERRUPTED, "crash": State.FAILED, "invalid": State.FAILED,
                      "junk": State.FAILED}
    assert inspect(tmp_path / "nothing").state is State.PENDING
    held.release()
    assert inspect(tmp_path / "live").state is State.KILLED


def test_status_table(suite, tmp_path, capsys):
    runs = tmp_path / "runs"
    settings = open_study(runs, *build_settings(suite, runs, (0, 1), tuple(SETS)))
    cfg = load_run_config(suite / "E13i-baseline.yaml", SETS).to_dict()
    val = {"accuracy_flexible": None, "eval_quant": "mxfp4/w4a4"}
    merged = {"accuracy": 0.5, "accuracy_flexible": 0.75, "eval_samples": 2, "eval_quant": "mxfp4/w4a4",
              "eval_lora": "merged"}
    _fake_run(runs / "E13i-baseline-s0", cfg, "complete", steps=[
        {"step": 0, "accuracy": 0.0, **val, "eval_lora": "separate"}, {"step": 1, "accuracy": None},
        {"step": 2, "accuracy": 0.25, "accuracy_flexible": 0.5, "eval_quant": "mxfp4/w4a4", "eval_lora": "separate",
         "eval_merged": merged}])
    _fake_run(runs / "E13i-baseline-s1", cfg, "complete", steps=[  # written before eval_lora existed
        {"step": 0, "accuracy": 0.0, **val}, {"step": 2, "accuracy": 0.125, **val}])
    _fake_run(runs / "E13i-high-s0", cfg, "running", steps=[{"step": 0, "accuracy": 0.0, **val}, {"step": 1}])
    _fake_run(runs / "E13i-low-s0", cfg, "failed", "RuntimeError: boom", steps=[{"step": 0, "accuracy": 0.0, **val}])
    live = _fake_run(runs / "control-s1", cfg, "running", live=True)  # a first run, 5 minutes in
    info = json.loads(live.run_json.read_text())
    info["started"] = (datetime.now(timezone.utc) - timedelta(minutes=5)).isoformat(timespec="seconds")
    live.run_json.write_text(json.dumps(info))
    (runs / "_study" / "attempts.jsonl").write_text(
        "".join(json.dumps({"run": n, "wall_s": w}) + "\n"
                for n, w in [("E13i-baseline-s0", 100), ("E13i-baseline-s1", 80), ("E13i-baseline-s1", 20),
                             ("E13i-high-s0", 30)]) + '{"run": "cut by a ki')
    assert _study("status", runs) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0] + "-s" + line.split()[1]: line for line in out.splitlines()
            if line.split()[:1] and line.split()[0] in [a.name for a in settings.arms]}
    assert len(rows) == 18
    assert rows["E13i-baseline-s0"].split()[2:] == ["complete", "2/2", "25.0", "/", "50.0", "50.0", "/", "75.0",
                                                    "1m", "40s"]
    assert rows["E13i-baseline-s1"].split()[2:] == ["complete", "2/2", "12.5", "/", "—", "—", "1m", "40s"]
    assert rows["E13i-high-s0"].split()[2:] == ["killed", "1/2", "—", "—", "30s"]
    assert rows["E13i-low-s0"].split()[2:] == ["failed", "0/2", "—", "—", "—"]
    assert rows["control-s0"].split()[2:] == ["pending", "—/2", "—", "—", "—"]
    assert rows["control-s1"].split()[2:4] == ["running", "—/2"] and rows["control-s1"].split()[-2] == "5m"
    live.release()
    assert "18 runs: 2 complete, 1 failed, 1 killed, 13 pending, 1 running; wall time so far 8m 5" in out
    assert "estimated time left: 26m 40s (16 runs x 1m 40s, the mean of 2 complete runs)" in out
    assert "  E13i-low-s0: failed (RuntimeError: boom)" in out


# --- real runs ------------------------------------------------------------------------------------------

def test_a_study_resumes_what_was_stopped_retries_only_when_asked_and_reports(small_suite, tmp_path, capfd):
    runs = tmp_path / "runs"
    cmd = ["study", "run", small_suite, "--seeds", "0", "--runs", runs, *ARGS]
    open_study(runs, *build_settings(small_suite, runs, (0,), tuple(SETS)))
    # control-s0: a process died right after creating it (running, lock free, nothing logged)
    cfg = load_run_config(runs / "_study" / "control.yaml", [*SETS, "seed=0", "engine=trl"], name="control-s0")
    _fake_run(runs / "control-s0", cfg.to_dict(), "running")
    # E13i-baseline-s0: a crash
    base = load_run_config(small_suite / "E13i-baseline.yaml", [*SETS, "seed=0", "engine=trl"],
                           name="E13i-baseline-s0")
    _fake_run(runs / "E13i-baseline-s0", base.to_dict(), "failed", "RuntimeError: simulated crash")
    crashed = (runs / "E13i-baseline-s0" / "run.json").read_text()

    # 1. SIGTERM to the study while control-s0 trains: the child stops cleanly and marks itself failed
    log = tmp_path / "study.log"
    with open(log, "w") as fh:
        study = subprocess.Popen([sys.executable, "-m", "srdd", *map(str, cmd)], stdout=fh, stderr=subprocess.STDOUT)
        _wait_for(lambda: (runs / "control-s0" / "metrics.jsonl").read_text().count("\n") >= 1, study)
        study.send_signal(signal.SIGTERM)
        study.wait(timeout=300)
    out = log.read_text()
    assert study.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "[1/2] control-s0: resuming (killed (left running by a process that died)) ..." in out
    assert "[1/2] control-s0: stopped (terminated by SIGTERM) after" in out
    assert "continue with: srdd study run" in out
    info = RunDir.open(runs / "control-s0").info()
    assert info["status"] == "failed" and info["reason"] == "terminated by SIGTERM", out[-3000:]
    logged = (runs / "control-s0" / "metrics.jsonl").read_text()
    capfd.readouterr()

    # 2. resumed to the end, no step logged twice; the crashed run is reported, not retried
    code, out = _study(*cmd[1:]), capfd.readouterr().out
    assert code == 1, out[-3000:]
    assert "[1/2] control-s0: resuming (stopped (terminated by SIGTERM)) ..." in out
    assert "[1/2] control-s0: complete in" in out
    assert ("[2/2] E13i-baseline-s0: failed (RuntimeError: simulated crash); not retried (pass --retry-failed"
            in out)
    assert "no report until every run is complete (1 left" in out
    assert (runs / "control-s0" / "metrics.jsonl").read_text().startswith(logged)
    assert _steps(runs / "control-s0") == [0, 1, 2]
    assert (runs / "E13i-baseline-s0" / "run.json").read_text() == crashed

    # 3. --retry-failed: the crashed run moves to _failed/ and runs anew; every run complete -> the report
    code, out = _study(*cmd[1:], "--retry-failed"), capfd.readouterr().out
    assert code == 0, out[-3000:]
    assert "[1/2] control-s0: complete, skipped" in out
    moved = list((runs / "_failed").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("E13i-baseline-s0-")
    assert (moved[0] / "run.json").read_text() == crashed
    assert "[2/2] E13i-baseline-s0: running ..." in out and "[2/2] E13i-baseline-s0: complete in" in out
    assert f"every run is complete: srdd correlate {runs} -o {tmp_path / 'report'}" in out
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report  # correlate read the two runs and ignored _study/ and _failed/
    attempts = (runs / "_study" / "attempts.jsonl").read_text().splitlines()
    assert [json.loads(a)["status"] for a in attempts] == ["failed", "complete", "complete"]

    # 4. nothing left to do: no child process, no new attempt
    assert _study(*cmd[1:]) == 0
    out = capfd.readouterr().out
    assert out.count("complete, skipped") == 2 and "run control-s0 ->" not in out
    assert (runs / "_study" / "attempts.jsonl").read_text().splitlines() == attempts
    assert "report" in out and "is up to date" in out

    assert _study("status", runs) == 0
    out = capfd.readouterr().out
    assert "2 runs: 2 complete" in out and "every run is complete" in out
    assert out.count("2/2") == 2


def test_a_declared_analysis_and_margin_are_recorded_and_part_of_the_setting(suite, tmp_path, capsys):
    """What a pre-registration declares reaches the report (reports.settings reads _study/study.json) and
    cannot change between calls; an undeclared study's file keeps matching calls that declare nothing."""
    from reports.settings import resolve

    runs = tmp_path / "runs"
    open_study(runs, *build_settings(suite, runs, (0,), tuple(SETS), analysis="pooled", margin_pp=7.5))
    recorded = json.loads((runs / "_study" / "study.json").read_text())
    assert (recorded["analysis"], recorded["margin_pp"]) == ("pooled", 7.5)
    resolved = resolve(runs, analysis=None, margin_pp=None, test_size=64)
    assert resolved.settings.analysis == "pooled" and resolved.settings.margin == 0.075
    assert "_study/study.json" in resolved.margin_source and "_study/study.json" in resolved.analysis_source
    for extra, what in [(["--margin", "5"], "--margin: recorded 7.5, now 5"),
                        ([], "--margin: recorded 7.5, now None")]:
        assert _study("run", suite, "--seeds", "0", "--runs", runs, *ARGS, "--analysis", "pooled", *extra) == 2
        err = capsys.readouterr().err
        assert "holds a study with other settings" in err and what in err, err
    plain = tmp_path / "plain"
    open_study(plain, *build_settings(suite, plain, (0,), tuple(SETS)))
    assert json.loads((plain / "_study" / "study.json").read_text())["margin_pp"] is None
    assert open_study(plain, *build_settings(suite, plain, (0,), tuple(SETS))) == load_settings(plain)


def test_a_declared_family_is_recorded_and_part_of_the_setting(suite, small_suite, tmp_path, capsys):
    """--hypotheses is recorded in the suite's order, reaches the report's settings, cannot change between
    calls, and is refused when the study does not run an arm of it."""
    from reports.settings import resolve

    runs = tmp_path / "runs"
    open_study(runs, *build_settings(suite, runs, (0,), tuple(SETS), hypotheses=("C3", "C1", "C2")))
    assert json.loads((runs / "_study" / "study.json").read_text())["hypotheses"] == ["C1", "C2", "C3"]
    assert load_settings(runs).hypotheses == ("C1", "C2", "C3")
    resolved = resolve(runs, analysis=None, margin_pp=None, test_size=64)
    assert resolved.settings.confirmatory == ("C1", "C2", "C3") and "_study/study.json" in resolved.family_source
    assert [h.key for h in resolved.hypotheses][-3:] == ["C1", "C2", "C3"]  # the suite defines them: one each
    assert len(resolved.hypotheses) == len({h.key for h in resolved.hypotheses})
    for extra, what in [(["--hypotheses", "C1,C2"], "--hypotheses: recorded ['C1', 'C2', 'C3'], now ['C1', 'C2']"),
                        ([], "--hypotheses: recorded ['C1', 'C2', 'C3'], now None")]:
        assert _study("run", suite, "--seeds", "0", "--runs", runs, *ARGS, *extra) == 2
        err = capsys.readouterr().err
        assert "holds a study with other settings" in err and what in err, err
    again = build_settings(suite, runs, (0,), tuple(SETS), hypotheses=("C2", "C3", "C1"))  # another order: the same
    assert open_study(runs, *again) == load_settings(runs)
    assert _study("run", small_suite, "--seeds", "0", "--runs", tmp_path / "small", "--hypotheses", "C1,C2") == 2
    err = capsys.readouterr().err
    assert "C2 compares E13m-rmsnorm with control, and the suite has no arm E13m-rmsnorm" in err, err
    assert not (tmp_path / "small").exists()


def test_declared_arms_are_the_study_recorded_and_part_of_the_setting(suite, tmp_path, capsys):
    """--arms: a pre-registered study of some of the suite's arms plans, shows and waits for those alone."""
    from rin_train.study.status import status_lines

    runs = tmp_path / "runs"
    settings, control = build_settings(suite, runs, (0, 1), tuple(SETS), arms=["E13j-variable", CONTROL])
    assert [a.name for a in settings.arms] == [CONTROL, "E13j-variable"] and settings.declared_arms == (CONTROL,
                                                                                                       "E13j-variable")
    assert yaml.safe_load(control)["noise"]["enabled"] is False  # still the suite baseline's control
    open_study(runs, settings, control)
    assert json.loads((runs / "_study" / "study.json").read_text())["declared_arms"] == [CONTROL, "E13j-variable"]
    assert load_settings(runs) == settings
    assert [s.name for s in plan(load_settings(runs), runs)] == ["control-s0", "E13j-variable-s0", "control-s1",
                                                                 "E13j-variable-s1"]
    assert any("E13j-variable" in line for line in status_lines(load_settings(runs), runs))
    assert not any("E13i-baseline" in line for line in status_lines(load_settings(runs), runs))
    assert "declared: --arms control,E13j-variable" in status_lines(load_settings(runs), runs)
    for extra, what in [([], "--arms: recorded ['control', 'E13j-variable'], now None"),
                        (["--arms", "control"], "--arms: recorded ['control', 'E13j-variable'], now ['control']")]:
        assert _study("run", suite, "--seeds", "0,1", "--runs", runs, *ARGS, *extra) == 2
        err = capsys.readouterr().err
        assert "holds a study with other settings" in err and what in err, err
    assert _study("run", suite, "--seeds", "0", "--runs", tmp_path / "other", *ARGS, "--arms", "control,E13x") == 2
    assert "--arms: unknown arm(s) E13x; the suite's arms: control, E13i-baseline" in capsys.readouterr().err
    assert _study("run", suite, "--seeds", "0", "--runs", tmp_path / "c3", *ARGS, "--arms", "control,E13j-variable",
                  "--hypotheses", "C3") == 2
    assert ("C3 compares E13j-variable with E13i-baseline, and --arms leaves out E13i-baseline (the study's arms: "
            "control, E13j-variable)") in capsys.readouterr().err
    assert not (tmp_path / "other").exists() and not (tmp_path / "c3").exists()


@pytest.mark.parametrize("margin", ["nan", "0", "-1", "100", "101"])
def test_a_bad_margin_is_refused_before_any_arm_is_resolved(suite, tmp_path, capsys, margin):
    assert _study("run", suite, "--seeds", "0", "--runs", tmp_path / "runs", "--margin", margin) == 2
    err = capsys.readouterr().err
    assert err.startswith("srdd study: error: --margin") and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()
