"""Faults during `srdd train --preset smoke`: SIGKILL, SIGTERM, a full disk. Resume loses and repeats no step."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import huggingface_hub.constants as hub

from rin_train.rundir import RunDir
from srdd.cli import main

ALL_STEPS = [0, 1, 2, 3]  # the smoke preset logs steps 1..3 and validates step 0 on its own line


def _steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _start(out: Path) -> subprocess.Popen:
    return subprocess.Popen(["srdd", "train", "--preset", "smoke", "--out", str(out)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_lines(out: Path, n: int, proc: subprocess.Popen, timeout: float = 400) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        metrics = out / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count("\n") >= n:
            return
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    raise AssertionError(f"no {n} metrics lines after {timeout} s")


def _resume_and_check(out: Path, kept: str) -> None:
    assert main(["train", "--resume", "--out", str(out)]) == 0
    after = (out / "metrics.jsonl").read_text()
    assert after.startswith(kept)  # nothing logged before the fault was lost or rewritten
    assert _steps(out) == ALL_STEPS  # 0 steps lost, 0 duplicated
    assert RunDir.open(out).status == "complete"


def test_sigkill_then_a_torn_line_and_a_broken_newest_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_lines(out, 2, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    run = RunDir.open(out)
    assert run.status == "running" and not run.is_live()
    kept = (out / "metrics.jsonl").read_text()
    with open(out / "metrics.jsonl", "a") as fh:  # what a write cut by power loss leaves
        fh.write('{"step": 3, "sigma": 0.0')
    broken = out / "checkpoints" / "checkpoint-3"  # a newest checkpoint whose save never finished
    broken.mkdir(parents=True)
    (broken / "trainer_state.json").write_text('{"global_step": 3, "log_hist')
    assert run.latest_checkpoint() != broken
    _resume_and_check(out, kept)


def test_sigterm_marks_failed_and_resume_completes(tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    _wait_for_lines(out, 2, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 1
    info = RunDir.open(out).info()
    assert info["status"] == "failed" and info["reason"] == "terminated by SIGTERM"
    _resume_and_check(out, (out / "metrics.jsonl").read_text())


def test_disk_full_fails_the_run_cleanly_and_resume_completes(tmp_path, monkeypatch, capsys):
    """A short write, then ENOSPC, on the third metrics line; and no DNS lookup with HF_HUB_OFFLINE unset."""
    out = tmp_path / "run"
    real_write = os.write
    metrics_writes = []

    def full_disk(fd: int, data) -> int:
        if not os.readlink(f"/proc/self/fd/{fd}").endswith("metrics.jsonl"):
            return real_write(fd, data)
        metrics_writes.append(len(data))
        if len(metrics_writes) == 3:
            return real_write(fd, bytes(data[: len(data) // 2]))  # short write: half the line
        if len(metrics_writes) == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    lookups = []

    def no_dns(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror("no network in tests")

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "HF_HUB_DISABLE_TELEMETRY", False)
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    monkeypatch.setattr(os, "write", full_disk)
    assert main(["train", "--preset", "smoke", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "srdd train: error: [Errno 28] No space left on device" in err and "Traceback" not in err
    monkeypatch.setattr(os, "write", real_write)
    info = RunDir.open(out).info()
    assert info["status"] == "failed" and "No space left on device" in info["reason"]
    kept = (out / "metrics.jsonl").read_text()
    assert kept.endswith("\n") and _steps(out) == [0, 1]  # the half line was cut off at once
    _resume_and_check(out, kept)
    assert lookups == []  # a local model trains without a single DNS lookup
