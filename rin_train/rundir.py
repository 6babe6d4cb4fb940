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
- `metrics.jsonl` is append-only: one JSON object per line, each line written by a
  single `write`, flushed and fsync'ed, so a kill loses at most the line being
  written. It is never truncated or rewritten.
- `create` refuses an existing path (even an empty directory); `open_for_resume`
  refuses a complete run and a run another live process holds.
- A process that owns a run holds an exclusive `flock` on `run.lock` for as long
  as the RunDir object lives, so two writers can never interleave, and a reader
  can tell a crashed "running" run (lock free) from a live one (`is_live()`).
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import platform
from importlib import metadata
from pathlib import Path

from srdd import __version__
from srdd.errors import SrddError
from srdd.jsonio import check_finite, write_json_atomic

SCHEMA = "srdd.run/v1"
STATUSES = ("running", "complete", "failed", "invalid")
FINAL_STATUSES = ("complete", "failed", "invalid")
REQUIRED_METRIC_KEYS = ("step",)


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    """Versions of the interpreter and the libraries a run depends on (None when not installed)."""
    out = {"python": platform.python_version(), "srdd": __version__}
    for name in ("torch", "transformers", "trl", "peft", "verl"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


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
    def checkpoints(self) -> Path:
        """Where an engine keeps its resumable checkpoints (TRL's `checkpoint-N/`)."""
        return self.path / "checkpoints"

    def scan_path(self, which: str) -> Path:
        if which not in ("before", "after"):
            raise ValueError(f"scan must be 'before' or 'after', got {which!r}")
        return self.path / f"scan_{which}.json"

    # --- construction --------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, *, name: str, config: dict, seed: int) -> RunDir:
        """Make a new run directory with run.json (status running) and an empty metrics.jsonl.

        Refuses any existing `path`. `config` is the resolved config; `seed` is stored in it.
        """
        path = Path(path)
        if path.exists():
            raise SrddError(f"run directory {path} already exists; runs are never overwritten "
                            "(choose another --out, or pass --resume to continue that run)")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()  # atomic: of two racing creators exactly one succeeds
        except FileExistsError:
            raise SrddError(f"run directory {path} already exists; runs are never overwritten") from None
        run = cls(path)
        run._lock()
        config = {**config, "seed": seed}
        _check_config(config)
        run._write_info({"schema": SCHEMA, "name": name, "status": "running", "reason": None,
                         "config": config, "versions": versions(), "started": now_iso(), "finished": None,
                         "resumed": []})
        with open(run.metrics_path, "x", encoding="utf-8"):
            pass
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
        run._lock()
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
        return run

    # --- run.json ------------------------------------------------------------------------------
    def info(self) -> dict:
        try:
            return json.loads(self.run_json.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SrddError(f"{self.run_json} does not exist") from None
        except json.JSONDecodeError as exc:
            raise SrddError(f"{self.run_json} is not valid JSON: {exc}") from None

    @property
    def status(self) -> str:
        return self.info()["status"]

    @property
    def config(self) -> dict:
        return self.info()["config"]

    def is_live(self) -> bool:
        """Whether some process (this one included) holds the run open for writing."""
        if self._lock_fd is not None:
            return True
        lock = self.path / "run.lock"
        if not lock.exists():
            return False
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def finish(self, status: str, reason: str | None = None) -> None:
        """Set the final status (complete | failed | invalid) and the finish time; run.json rewritten atomically."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {FINAL_STATUSES}, got {status!r}")
        self._update(status=status, reason=reason, finished=now_iso())

    def _update(self, **fields) -> None:
        self._write_info({**self.info(), **fields})

    def _write_info(self, info: dict) -> None:
        write_json_atomic(self.run_json, info, force=True)

    def _lock(self) -> None:
        fd = os.open(self.path / "run.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SrddError(f"run {self.path} is in use by another live process") from None
        self._lock_fd = fd

    def release(self) -> None:
        """Drop the writer lock (also dropped when the process exits, however it exits).

        A finished run (complete, failed, invalid) also loses its run.lock file,
        removed while still locked, so no writer can be holding it; only a run
        left "running" by a crash keeps it, unlocked.
        """
        if self._lock_fd is not None:
            if self.status in FINAL_STATUSES:
                (self.path / "run.lock").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- metrics.jsonl -------------------------------------------------------------------------
    def append_metrics(self, record: dict) -> None:
        """Append one record as one line; flushed and fsync'ed before returning. Never rewrites."""
        if not isinstance(record, dict) or any(k not in record for k in REQUIRED_METRIC_KEYS):
            raise ValueError(f"a metrics record is a dict with at least {REQUIRED_METRIC_KEYS}, got {record!r}")
        check_finite(record)
        line = (json.dumps(record, allow_nan=False) + "\n").encode("utf-8")
        fd = os.open(self.metrics_path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def logged_steps(self) -> list[dict]:
        """Every record in metrics.jsonl, in file order; a corrupt line is an error naming it."""
        if not self.metrics_path.is_file():
            raise SrddError(f"{self.metrics_path} does not exist")
        records = []
        for i, line in enumerate(self.metrics_path.read_text(encoding="utf-8").splitlines(), 1):
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


def _check_config(config: dict) -> None:
    """The fields DESIGN.md §4 promises every run.json config holds."""
    quant, noise = config.get("quant"), config.get("noise")
    if not isinstance(quant, dict) or not {"format", "mode"} <= set(quant):
        raise ValueError("run config needs quant: {format, mode} (DESIGN.md §4)")
    if not isinstance(noise, dict) or not isinstance(noise.get("enabled"), bool):
        raise ValueError("run config needs noise: {enabled: true|false, ...settings} (DESIGN.md §4); a run "
                         "whose noise settings are unknown cannot be compared with others, so say what it ran with")
