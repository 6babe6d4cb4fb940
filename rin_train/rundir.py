"""Run directories (DESIGN.md §4): created once, appended to, never overwritten.

This is the one API through which every engine (TRL here, verl through
`srdd ingest verl`) writes a run, so the layout cannot drift between them:

    run = RunDir.create(Path("runs/E13j-s0"), name="E13j-s0", config=cfg_dict, seed=0)
    run.append_metrics({"step": 0, "sigma": None, "sigma_layers": None, "reward_mean": None,
                        "accuracy": 0.41, "eval_quant": "mxfp4/w4a4"})
    run.write_scan("before", scan_doc)          # -> scan_before.json
    run.finish("complete")                      # or "failed"/"invalid" with a reason

- `run.json` (schema `srdd.run/v1`) is rewritten atomically (temp file + rename)
  only to change status/reason/finished; the config, versions and start time
  written by `create` never change.
- `metrics.jsonl` is append-only: one JSON object per line, written whole (short
  writes are continued) and fsync'ed, so a kill loses at most the line being
  written. A line a failed write left half-written (disk full) is cut off at once
  when possible, else by `open_for_resume`; nothing else is ever truncated or rewritten.
- `eval_outcomes.jsonl` (rin_train.outcomes writes it, reports.outcomes reads it): one line per
  evaluation with every problem's strict/flexible correctness, appended exactly as metrics.jsonl
  is; made by the first evaluation that has per-problem results (for verl, from its validation
  dumps: rin_train.verl.generations), so a run without it (older runs, verl runs without dumps)
  says that its outcomes were never measured.
- A checkpoint counts only once `mark_checkpoint` has fsync'ed its files and
  renamed its marker into place (last); `latest_checkpoint` skips a newest one
  that is unmarked or broken and resumes from the one before.
- `create` refuses an existing path (even an empty directory) and leaves nothing
  behind when it fails; `open_for_resume` refuses a complete run, a run another
  live process holds, and a run directory holding a symlink (never written through).
- A process that owns a run holds an exclusive `flock` on `run.lock` for as long
  as the RunDir object lives, so two writers can never interleave, and a reader
  can tell a crashed "running" run (lock free) from a live one (`is_live()`).
- The owner also keeps `run.reserve`, a small file of allocated blocks, and
  frees it to write the final status when the disk is full: a run that died of
  a full disk still says "failed" and why, instead of "running" forever.
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from srdd import __version__
from srdd.errors import SrddError
from srdd.jsonio import check_finite, dumps_json, write_json_atomic
from srdd.provenance import versions

SCHEMA = "srdd.run/v1"
STATUSES = ("running", "complete", "failed", "invalid")
FINAL_STATUSES = ("complete", "failed", "invalid")
RESERVE_BYTES = 1 << 20  # run.json is a few KiB; a MiB also covers its temp file and directory growth
REQUIRED_METRIC_KEYS = ("step",)
MAX_SEED = 2**32 - 1
"""A run's seed: numpy's and the task sampler's seeds are 32-bit."""
CHECKPOINT_MARK = "srdd_checkpoint.json"
"""Written (atomically, last) into a checkpoint once every file of it is on disk."""
OUTCOMES = "eval_outcomes.jsonl"
WRITTEN = ("run.json", "run.lock", "run.reserve", "metrics.jsonl", OUTCOMES, "scan_before.json", "scan_after.json",
           "checkpoints")
"""What srdd writes in a run directory: none of it may be a symlink."""


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class RunDir:
    """One run directory. Build it with `create` (new run), `open_for_resume` or `open` (read only)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    # --- paths ---------------------------------------------------------------------------------
    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def outcomes_path(self) -> Path:
        return self.path / OUTCOMES

    @property
    def checkpoints(self) -> Path:
        """Where an engine keeps its resumable checkpoints (TRL's `checkpoint-N/`)."""
        return self.path / "checkpoints"

    def scan_path(self, which: str) -> Path:
        if which not in ("before", "after"):
            raise ValueError(f"scan must be 'before' or 'after', got {which!r}")
        return self.path / f"scan_{which}.json"

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, *, name: str, config: dict, seed: int, provenance: dict | None = None) -> RunDir:
        """Make a new run directory with run.json (status running) and an empty metrics.jsonl.

        Refuses any existing `path`. `config` is the resolved config; `seed` is stored in it.
        `provenance` (model origin, command line, machine) is stored as given.
        """
        path = Path(path)
        if path.exists() or path.is_symlink():
            raise SrddError(f"run directory {path} already exists; runs are never overwritten "
                            "(choose another --out, or pass --resume to continue that run)")
        config = {**config, "seed": seed}
        _check_config(config)
        info = {"schema": SCHEMA, "name": name, "status": "running", "reason": None, "config": config,
                "versions": versions(), "provenance": provenance, "started": now_iso(), "finished": None,
                "wall_time_s": None, "resumed": []}
        dumps_json(info)  # a value JSON cannot hold fails here, before the directory exists
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()  # atomic: of two racing creators exactly one succeeds
        except FileExistsError:
            raise SrddError(f"run directory {path} already exists; runs are never overwritten") from None
        run = cls(path)
        try:
            run._lock()
            run._reserve()
            run._write_info(info)
            with open(run.metrics_path, "x", encoding="utf-8"):
                pass
        except BaseException:
            run.release()
            shutil.rmtree(path, ignore_errors=True)  # made by this call a moment ago: nothing else is in it
            raise
        return run

    @classmethod
    def open_for_resume(cls, path: Path) -> RunDir:
        """Reopen a run that did not complete (killed, failed, stalled) to continue it.

        Its status goes back to "running" and the resume time is recorded; the
        metrics already logged stay as they are.
        """
        run = cls.open(path)
        info = run.info()
        if info.get("status") == "complete":
            raise SrddError(f"run {path} is already complete; nothing to resume")
        run.refuse_symlinks()
        run._lock()
        run._reserve()
        run.repair_torn_tail()
        run.logged_steps()  # a corrupt metrics file is reported before any work
        run._update(status="running", reason=None, finished=None,
                    resumed=[*info.get("resumed", []), {"at": now_iso(), "previous_status": info.get("status"),
                                                        "previous_reason": info.get("reason")}])
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        """An existing run directory, for reading (`info`, `logged_steps`)."""
        run = cls(Path(path))
        if not run.run_json.is_file():
            raise SrddError(f"{path} is not a run directory (no run.json)")
        info = run.info()
        if info.get("schema") != SCHEMA:
            raise SrddError(f"{run.run_json}: schema {info.get('schema')!r}, expected {SCHEMA}")
        if info.get("status") not in STATUSES:
            raise SrddError(f"{run.run_json}: status {info.get('status')!r}, expected one of {list(STATUSES)}")
        if not isinstance(info.get("config"), dict):
            raise SrddError(f"{run.run_json}: no 'config' mapping (the resolved config a run records); "
                            "this run cannot be continued or compared")
        return run

    def refuse_symlinks(self) -> None:
        """Refuse a run directory where anything srdd writes is a symlink: it would write outside the run."""
        if self.path.is_symlink():
            raise SrddError(f"run directory {self.path} is a symlink; give the real directory")
        links = [name for name in WRITTEN if (self.path / name).is_symlink()]
        if links:
            raise SrddError(f"run {self.path}: {', '.join(links)} is a symlink; srdd never writes through a "
                            "symlink in a run directory (replace it with the real file)")

    # --- run.json ------------------------------------------------------------------------------
    def info(self) -> dict:
        try:
            info = json.loads(self.run_json.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SrddError(f"{self.run_json} does not exist") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SrddError(f"{self.run_json} is not valid JSON: {exc}") from None
        if not isinstance(info, dict):
            raise SrddError(f"{self.run_json}: expected a JSON object, got {type(info).__name__}")
        return info

    @property
    def status(self) -> str:
        return self.info()["status"]

    @property
    def config(self) -> dict:
        return self.info()["config"]

    def is_live(self) -> bool:
        """Whether some process (this one included) holds the run open for writing."""
        return self._lock_fd is not None or lock_held(self.path / "run.lock")

    def finish(self, status: str, reason: str | None = None) -> None:
        """Set the final status (complete | failed | invalid), the finish time and the wall time since the start
        (interruptions of a resumed run included); run.json rewritten atomically."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {FINAL_STATUSES}, got {status!r}")
        finished = now_iso()
        elapsed = _dt.datetime.fromisoformat(finished) - _dt.datetime.fromisoformat(self.info()["started"])
        fields = {"status": status, "reason": reason, "finished": finished, "wall_time_s": elapsed.total_seconds()}
        try:
            self._update(**fields)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not self.reserve_path.exists():
                raise
            self.reserve_path.unlink()  # the blocks it held are what the new run.json needs
            self._update(**fields)

    def _update(self, **fields) -> None:
        self._write_info({**self.info(), **fields})

    def _write_info(self, info: dict) -> None:
        write_json_atomic(self.run_json, info, force=True)

    @property
    def reserve_path(self) -> Path:
        return self.path / "run.reserve"

    def _reserve(self) -> None:
        """Allocate RESERVE_BYTES for `finish` to free on a full disk; a disk already too full is not an error."""
        try:
            fd = os.open(self.reserve_path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        except OSError:
            return
        try:
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
        except OSError:
            pass  # whatever was allocated still helps
        finally:
            os.close(fd)

    def _lock(self) -> None:
        fd = try_lock(self.path / "run.lock")
        if fd is None:
            raise SrddError(f"run {self.path} is in use by another live process")
        self._lock_fd = fd

    def release(self) -> None:
        """Drop the writer lock (also dropped when the process exits, however it exits).

        A finished run (complete, failed, invalid) also loses its run.lock file,
        removed while still locked, so no writer can be holding it; only a run
        left "running" by a crash keeps it, unlocked.
        """
        if self._lock_fd is not None:
            self.reserve_path.unlink(missing_ok=True)
            if self.status in FINAL_STATUSES:
                (self.path / "run.lock").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- metrics.jsonl -------------------------------------------------------------------------
    def append_metrics(self, record: dict) -> None:
        """Append one record as one line; flushed and fsync'ed before returning. Never rewrites."""
        if not isinstance(record, dict) or any(k not in record for k in REQUIRED_METRIC_KEYS):
            raise ValueError(f"a metrics record is a dict with at least {REQUIRED_METRIC_KEYS}, got {record!r}")
        _append_line(self.metrics_path, record, create=False)

    def append_outcomes(self, record: dict) -> None:
        """Append one evaluation's per-problem outcomes (rin_train.outcomes builds the record) as metrics are."""
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ValueError(f"an outcomes record is a dict with an integer 'step', got {str(record)[:200]}")
        _append_line(self.outcomes_path, record, create=True)

    def repair_torn_tail(self) -> int:
        """Cut a last line that a failed write left without its newline, in every append-only file; returns
        the bytes removed. Only an unterminated tail goes: every complete line was fsync'ed and stays."""
        return sum(_repair_torn_tail(path) for path in (self.metrics_path, self.outcomes_path))

    # --- checkpoints ---------------------------------------------------------------------------
    def mark_checkpoint(self, checkpoint: Path) -> None:
        """Count `checkpoint` as complete: fsync its files, then rename its marker into place, last."""
        checkpoint = Path(checkpoint)
        for item in sorted(checkpoint.rglob("*")):
            if item.is_file() and not item.is_symlink():
                _fsync_path(item)
        state = checkpoint / "trainer_state.json"
        mark = {"step": _checkpoint_step(checkpoint),
                "trainer_state_sha256": hashlib.sha256(state.read_bytes()).hexdigest() if state.is_file() else None}
        write_json_atomic(checkpoint / CHECKPOINT_MARK, mark, force=True)
        _fsync_path(checkpoint)

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint; newer broken ones are skipped with a note on stderr."""
        found = sorted((p for p in self.checkpoints.glob("checkpoint-*") if _checkpoint_step(p) is not None),
                       key=_checkpoint_step, reverse=True)
        marked = any((p / CHECKPOINT_MARK).exists() for p in found)  # runs from before markers: none has one
        for checkpoint in found:
            problem = _checkpoint_problem(checkpoint, require_mark=marked)
            if problem is None:
                return checkpoint
            print(f"skipping checkpoint {checkpoint}: {problem}", file=sys.stderr)
        return None

    def logged_steps(self) -> list[dict]:
        """Every record in metrics.jsonl, in file order; a corrupt line is an error naming it."""
        if not self.metrics_path.is_file():
            raise SrddError(f"{self.metrics_path} does not exist")
        try:
            text = self.metrics_path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise SrddError(f"{self.metrics_path} is not UTF-8 text (a binary file?)") from None
        records = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SrddError(f"{self.metrics_path}:{i}: corrupt metrics line ({exc.msg}): {line[:80]!r}") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("step"), int):
                raise SrddError(f"{self.metrics_path}:{i}: a metrics line needs an integer 'step': {line[:80]!r}")
            records.append(rec)
        return records

    # --- scans ---------------------------------------------------------------------------------
    def write_scan(self, which: str, doc: dict) -> None:
        """Write scan_before.json / scan_after.json (a srdd.scan/v1 document); each is written once."""
        path = self.scan_path(which)
        if path.exists():
            raise SrddError(f"{path} already exists; scans of a run are never overwritten")
        write_json_atomic(path, doc)


def try_lock(path: Path) -> int | None:
    """An exclusive flock on `path` (created if missing): the open fd, or None when another process holds it.

    The lock lives as long as the fd (and dies with the process, however it ends). A symlink at `path`
    is never followed (OSError ELOOP): a lock file created through it would land elsewhere."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def lock_held(path: Path) -> bool:
    """Whether some live process holds the flock on `path` (False when the file does not exist)."""
    if not path.exists() or path.is_symlink():
        return False
    fd = try_lock(path)
    if fd is None:
        return True
    os.close(fd)
    return False


def _check_config(config: dict) -> None:
    """The fields DESIGN.md §4 promises every run.json config holds."""
    quant, noise = config.get("quant"), config.get("noise")
    if not isinstance(quant, dict) or not {"format", "mode"} <= set(quant):
        raise ValueError("run config needs quant: {format, mode} (DESIGN.md §4)")
    if not isinstance(noise, dict) or not isinstance(noise.get("enabled"), bool):
        raise ValueError("run config needs noise: {enabled: true|false, ...settings} (DESIGN.md §4); a run "
                         "whose noise settings are unknown cannot be compared with others, so say what it ran with")


def _append_line(path: Path, record: dict, *, create: bool) -> None:
    """One JSON line, written whole and fsync'ed; a failed write leaves no half line when the disk lets it."""
    check_finite(record)
    line = (json.dumps(record, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | (os.O_CREAT if create else 0), 0o666)
    try:
        start = os.fstat(fd).st_size
        try:
            _write_all(fd, line)
        except OSError:
            _truncate_quietly(fd, start)  # no half line left behind when the disk has room to say so
            raise
        os.fsync(fd)
    finally:
        os.close(fd)


def _repair_torn_tail(path: Path) -> int:
    if not path.is_file():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data.rfind(b"\n") + 1
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        os.ftruncate(fd, keep)
        os.fsync(fd)
    finally:
        os.close(fd)
    print(f"{path}: removed a torn last line ({len(data) - keep} bytes) left by an interrupted write", file=sys.stderr)
    return len(data) - keep


def _write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written: a write may be short (signals, quotas, nearly full disks)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.ENOSPC, "write wrote nothing")
        view = view[n:]


def _truncate_quietly(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass  # open_for_resume cuts the torn tail instead


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checkpoint_step(path: Path) -> int | None:
    tail = path.name.removeprefix("checkpoint-")
    return int(tail) if path.is_dir() and tail.isdigit() else None


def _checkpoint_problem(checkpoint: Path, *, require_mark: bool) -> str | None:
    """Why `checkpoint` cannot be resumed from, or None.

    trainer_state.json is what Trainer writes last; it must parse and name this step. In a run that
    marks its checkpoints the marker must exist and match it; a run written before markers existed
    counts its checkpoints on trainer_state.json alone.
    """
    state_path = checkpoint / "trainer_state.json"
    try:
        raw = state_path.read_bytes()
        state = json.loads(raw)
    except OSError:
        return "no trainer_state.json (the save did not finish)"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "trainer_state.json is truncated or corrupt"
    if not isinstance(state, dict) or state.get("global_step") != _checkpoint_step(checkpoint):
        return "trainer_state.json does not name this checkpoint's step"
    mark_path = checkpoint / CHECKPOINT_MARK
    if not mark_path.exists():
        return f"no {CHECKPOINT_MARK} (the save did not finish)" if require_mark else None
    try:
        mark = json.loads(mark_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return f"{CHECKPOINT_MARK} is unreadable"
    if not isinstance(mark, dict) or mark.get("trainer_state_sha256") != hashlib.sha256(raw).hexdigest():
        return f"trainer_state.json changed after {CHECKPOINT_MARK} was written"
    return None
