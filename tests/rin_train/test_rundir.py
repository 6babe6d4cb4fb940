"""Run directories: created once, append-only metrics, atomic status, resumable, lock-protected."""

import errno
import json

import pytest

from rin_train import rundir
from rin_train.rundir import RESERVE_BYTES, SCHEMA, RunDir
from srdd.errors import SrddError

CONFIG = {"quant": {"format": "mxfp4", "mode": "w4a4"}, "noise": {"enabled": True, "sigma_start": 0.05}}


def _create(path, **kw):
    return RunDir.create(path, name="r", config=CONFIG, seed=kw.get("seed", 3))


def test_create_writes_run_json_per_design(tmp_path):
    run = _create(tmp_path / "runs" / "r")
    info = json.loads((tmp_path / "runs" / "r" / "run.json").read_text())
    assert info["schema"] == SCHEMA and info["status"] == "running" and info["reason"] is None
    assert info["config"]["seed"] == 3 and info["config"]["quant"] == {"format": "mxfp4", "mode": "w4a4"}
    assert info["config"]["noise"]["enabled"] is True
    assert {"python", "torch", "transformers", "trl", "peft", "srdd"} <= set(info["versions"])
    assert info["started"] and info["finished"] is None and info["wall_time_s"] is None
    assert (run.path / "metrics.jsonl").read_text() == ""


def _disk_full_while_reserved(monkeypatch, run):
    """Every run.json write fails with ENOSPC for as long as run.reserve holds its blocks."""
    real = rundir.write_json_atomic

    def write(path, obj, **kw):
        if run.reserve_path.exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, obj, **kw)

    monkeypatch.setattr(rundir, "write_json_atomic", write)


def test_a_full_disk_still_gets_the_final_status_written(tmp_path, monkeypatch):
    run = _create(tmp_path / "r")
    assert run.reserve_path.stat().st_blocks * 512 >= RESERVE_BYTES  # allocated, not a sparse promise
    _disk_full_while_reserved(monkeypatch, run)
    run.finish("failed", "[Errno 28] No space left on device")
    info = run.info()
    assert info["status"] == "failed" and "No space left" in info["reason"] and not run.reserve_path.exists()
    run.release()
    assert sorted(p.name for p in run.path.iterdir()) == ["metrics.jsonl", "run.json"]


def test_a_full_disk_without_a_reserve_is_an_error_not_silence(tmp_path, monkeypatch):
    run = _create(tmp_path / "r")
    run.reserve_path.unlink()  # as after a resume on a disk too full to allocate one
    monkeypatch.setattr(rundir, "write_json_atomic",
                        lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError, match="No space left"):
        run.finish("failed", "disk full")


def test_resume_takes_a_new_reserve_and_release_drops_it(tmp_path):
    run = _create(tmp_path / "r")
    run.release()  # released while still "running": the reserve goes, the lock file stays
    again = RunDir.open_for_resume(run.path)
    assert again.reserve_path.exists()
    again.finish("complete")
    again.release()
    assert not again.reserve_path.exists()


@pytest.mark.parametrize("existing", ["dir", "empty_dir", "file"])
def test_an_existing_path_is_never_overwritten(tmp_path, existing):
    path = tmp_path / "r"
    if existing == "file":
        path.write_text("precious")
    else:
        path.mkdir()
        if existing == "dir":
            (path / "metrics.jsonl").write_text('{"step": 0}\n')
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(SrddError, match="never overwritten"):
        _create(path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_config_must_say_quant_and_noise(tmp_path):
    with pytest.raises(ValueError, match="noise"):
        RunDir.create(tmp_path / "a", name="a", config={"quant": {"format": "mxfp4", "mode": "w4a4"}}, seed=0)
    with pytest.raises(ValueError, match="quant"):
        RunDir.create(tmp_path / "b", name="b", config={"noise": {"enabled": False}}, seed=0)


def test_metrics_are_appended_never_rewritten(tmp_path):
    run = _create(tmp_path / "r")
    run.append_metrics({"step": 0, "accuracy": 0.5, "eval_quant": "mxfp4/w4a4"})
    first = (run.path / "metrics.jsonl").read_bytes()
    run.append_metrics({"step": 1, "sigma": 0.05, "sigma_layers": {"0": 0.05}})
    assert (run.path / "metrics.jsonl").read_bytes().startswith(first)
    assert [r["step"] for r in run.logged_steps()] == [0, 1]
    with pytest.raises(ValueError, match="non-finite"):
        run.append_metrics({"step": 2, "loss": float("nan")})
    with pytest.raises(ValueError):
        run.append_metrics({"accuracy": 0.1})
    assert [r["step"] for r in run.logged_steps()] == [0, 1]


def test_a_corrupt_metrics_line_is_named(tmp_path):
    run = _create(tmp_path / "r")
    run.append_metrics({"step": 0})
    with open(run.metrics_path, "a") as fh:
        fh.write('{"step": 1, "sig\n')
    with pytest.raises(SrddError, match=r"metrics.jsonl:2: corrupt"):
        run.logged_steps()


def test_finish_scans_and_resume(tmp_path):
    run = _create(tmp_path / "r")
    run.write_scan("before", {"schema": "srdd.scan/v1"})
    assert json.loads((run.path / "scan_before.json").read_text())["schema"] == "srdd.scan/v1"
    with pytest.raises(SrddError, match="never overwritten"):
        run.write_scan("before", {"schema": "srdd.scan/v1"})
    with pytest.raises(ValueError):
        run.write_scan("middle", {})
    with pytest.raises(SrddError, match="in use"):  # the creator still holds the run
        RunDir.open_for_resume(run.path)
    run.finish("failed", "simulated")
    info = run.info()
    assert info["status"] == "failed" and info["reason"] == "simulated" and info["finished"]
    assert info["wall_time_s"] >= 0
    with pytest.raises(ValueError):
        run.finish("running")
    run.release()
    assert not RunDir.open(run.path).is_live() and not (run.path / "run.lock").exists()  # finished: no lock file
    again = RunDir.open_for_resume(run.path)
    info = again.info()
    assert info["status"] == "running" and info["finished"] is None
    assert info["resumed"][0]["previous_reason"] == "simulated" and info["config"]["seed"] == 3
    assert again.is_live()
    again.release()  # released while still running (a crash): the lock file stays, unlocked
    assert (run.path / "run.lock").exists() and not RunDir.open(run.path).is_live()
    again = RunDir.open_for_resume(run.path)
    again.finish("complete")
    again.release()
    assert sorted(p.name for p in run.path.iterdir()) == ["metrics.jsonl", "run.json", "scan_before.json"]
    with pytest.raises(SrddError, match="already complete"):
        RunDir.open_for_resume(run.path)


def test_open_refuses_a_non_run(tmp_path):
    with pytest.raises(SrddError, match="not a run directory"):
        RunDir.open(tmp_path)


def test_short_writes_are_continued(tmp_path, monkeypatch):
    import os

    run = _create(tmp_path / "r")
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:3])))  # 3 bytes per call
    run.append_metrics({"step": 0, "accuracy": 0.5, "eval_quant": "mxfp4/w4a4"})
    monkeypatch.undo()
    assert run.logged_steps() == [{"step": 0, "accuracy": 0.5, "eval_quant": "mxfp4/w4a4"}]


def test_a_failed_create_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="non-finite"):
        RunDir.create(tmp_path / "r", name="r", config={**CONFIG, "lr": float("inf")}, seed=0)
    assert not (tmp_path / "r").exists()


def test_resume_cuts_only_a_torn_last_line(tmp_path):
    run = _create(tmp_path / "r")
    run.append_metrics({"step": 0})
    run.release()
    with open(run.metrics_path, "a") as fh:
        fh.write('{"step": 1, "sig')
    again = RunDir.open_for_resume(run.path)
    assert run.metrics_path.read_text() == '{"step": 0}\n' and [r["step"] for r in again.logged_steps()] == [0]


def _checkpoint(run, step, state=None):
    path = run.checkpoints / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(state if state is not None else json.dumps({"global_step": step}))
    return path


def test_latest_checkpoint_skips_broken_and_unmarked_ones(tmp_path):
    run = _create(tmp_path / "r")
    good = _checkpoint(run, 2)
    run.mark_checkpoint(good)
    assert run.latest_checkpoint() == good
    _checkpoint(run, 4)  # trainer_state whole, but the marker never written: the save did not finish
    _checkpoint(run, 6, state='{"global_step": 6, "lo')  # truncated by a full disk
    assert run.latest_checkpoint() == good
    (good / "trainer_state.json").write_text(json.dumps({"global_step": 2, "changed": True}))
    assert run.latest_checkpoint() is None  # the marker's hash no longer matches


def test_legacy_checkpoints_without_markers_still_count(tmp_path):
    run = _create(tmp_path / "r")
    old = _checkpoint(run, 2)
    _checkpoint(run, 4, state="{")
    assert run.latest_checkpoint() == old
