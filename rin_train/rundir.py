"""Run directories (DESIGN.md §4): created once, appended to, never overwritten."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path

from srdd import __version__
from srdd.errors import SrddError
from srdd.jsonio import check_finite, read_json, write_json_atomic

SCHEMA = "srdd.run/v1"
STATUSES = ("running", "complete", "failed", "invalid")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict:
    out = {"python": platform.python_version(), "srdd": __version__}
    for name in ("torch", "transformers", "trl", "peft"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


class RunDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @property
    def run_json(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @classmethod
    def create(cls, path: Path, *, name: str, config: dict, seed: int) -> RunDir:
        path = Path(path)
        if path.exists():
            raise SrddError(f"run directory {path} already exists; runs are never overwritten "
                            "(choose another --out, or --resume to continue it)")
        if not path.parent.exists():
            path.parent.mkdir(parents=True)
        path.mkdir()
        run = cls(path)
        write_json_atomic(run.run_json, {"schema": SCHEMA, "name": name, "status": "running", "reason": None,
                                         "config": {**config, "seed": seed}, "versions": versions(),
                                         "started": _now(), "finished": None})
        run.metrics_path.touch()
        return run

    @classmethod
    def open_for_resume(cls, path: Path) -> RunDir:
        run = cls(Path(path))
        if not run.run_json.is_file():
            raise SrddError(f"{path} is not a run directory (no run.json)")
        if run.info()["status"] == "complete":
            raise SrddError(f"run {path} is already complete")
        run._update(status="running", reason=None, finished=None)
        return run

    def info(self) -> dict:
        return read_json(self.run_json, what="run.json")

    def _update(self, **fields) -> None:
        write_json_atomic(self.run_json, {**self.info(), **fields}, force=True)

    def append_metrics(self, record: dict) -> None:
        check_finite(record)
        with open(self.metrics_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, allow_nan=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def logged_steps(self) -> list[dict]:
        records = []
        for i, line in enumerate(self.metrics_path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SrddError(f"{self.metrics_path}:{i}: corrupt metrics line ({exc.msg})") from None
        return records

    def write_scan(self, which: str, doc: dict) -> None:
        if which not in ("before", "after"):
            raise ValueError(which)
        write_json_atomic(self.path / f"scan_{which}.json", doc, force=True)

    def finish(self, status: str, reason: str | None = None) -> None:
        if status not in STATUSES[1:]:
            raise ValueError(f"status must be one of {STATUSES[1:]}")
        self._update(status=status, reason=reason, finished=_now())
