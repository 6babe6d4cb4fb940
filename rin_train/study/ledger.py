"""The study's own files under RUNS/_study: the attempts ledger and the lock of `srdd study run`.

Both are opened with O_NOFOLLOW: a symlink planted at their place is refused, never appended
to or created through (see `layout.refuse_links`, which refuses it earlier with a clearer message).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from rin_train.rundir import lock_held, try_lock
from rin_train.study.layout import study_dir
from srdd.errors import SrddError


def attempts_file(runs: Path) -> Path:
    return study_dir(runs) / "attempts.jsonl"


def _open_nofollow(path: Path, flags: int) -> int:
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if path.is_symlink():
            raise SrddError(f"{path} is a symlink; a study never writes through a symlink") from None
        raise SrddError(f"cannot open {path}: {exc.strerror}") from None


def log_attempt(runs: Path, record: dict) -> None:
    """One line per child process, appended whole and fsync'ed."""
    fd = _open_nofollow(attempts_file(runs), os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, allow_nan=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def wall_times(runs: Path) -> dict[str, float]:
    """Seconds each run's child processes took, summed over its attempts (resumes included)."""
    out: dict[str, float] = {}
    path = attempts_file(runs)
    if not path.is_file() or path.is_symlink():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            out[rec["run"]] = out.get(rec["run"], 0.0) + float(rec["wall_s"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a line cut by a kill: that attempt's time is lost, nothing else
    return out


class StudyLock:
    """One `srdd study run` per runs directory at a time (flock on _study/study.lock)."""

    def __init__(self, runs: Path) -> None:
        self.path = study_dir(runs) / "study.lock"
        self.fd: int | None = None

    def __enter__(self) -> StudyLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.fd = try_lock(self.path)
        except OSError as exc:
            raise SrddError(f"cannot lock {self.path}: {exc.strerror}") from None
        if self.fd is None:
            raise SrddError(f"another srdd study run is working in {self.path.parent.parent}")
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def held_elsewhere(self) -> bool:
        return self.fd is None and not self.path.is_symlink() and lock_held(self.path)
