"""The study's run directories: which exist, what state each is in, which belong to the study.

What a run directory's state means for the next `srdd study run`:

    complete                              skipped
    running, lock held by a live process  skipped (another process trains it)
    running, lock free (process killed)   resumed: `srdd train --resume --out DIR`
    failed by SIGTERM/SIGHUP/Ctrl-C       resumed (it was stopped, not broken)
    failed of a full disk                 resumed (as `srdd train` itself advises, once space is freed)
    failed, invalid                       reported; with --retry-failed moved aside and run anew

A directory at a run's path that the study did not make (no run.json, a symlink, another
config or seed: `srdd train --out runs/E13i-baseline-s0` by hand) is refused by name before
anything runs: counting it would put a foreign run in the arm's statistics, and moving it
aside would move a user's directory.
"""

from __future__ import annotations

import datetime as _dt
import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rin_train.rundir import RunDir
from rin_train.study.layout import CONTROL, failed_dir, run_path
from rin_train.study.settings import Arm, Settings, config_digest
from srdd.errors import DISK_FULL, TORCH_WRITE_FAILED, SrddError

# The reasons `srdd train` records when a signal stopped it (rin_train.signals, rin_train.train):
# such a run was interrupted, not broken, and is resumed like a killed one.
INTERRUPTED_REASONS = ("terminated by SIG", "interrupted (Ctrl-C)")
# A run that died of a full disk records the error ("OSError: [Errno 28] No space left on device", or torch's).
DISK_FULL_REASONS = (*(f"[Errno {e}]" for e in DISK_FULL), TORCH_WRITE_FAILED)


class State(enum.Enum):
    PENDING = "pending"          # no directory yet
    COMPLETE = "complete"
    LIVE = "running"             # a live process holds the run's lock
    KILLED = "killed"            # status running, lock free: the process died
    INTERRUPTED = "interrupted"  # failed by a signal or a full disk: stopped, not broken
    FAILED = "failed"            # failed, invalid, or unreadable

    @property
    def resumable(self) -> bool:
        return self in (State.KILLED, State.INTERRUPTED)


@dataclass(frozen=True)
class RunState:
    state: State
    reason: str | None = None
    status: str | None = None  # run.json's own status word


def _stopped(reason: object) -> bool:
    if not isinstance(reason, str):
        return False
    return reason.startswith(INTERRUPTED_REASONS) or any(d in reason for d in DISK_FULL_REASONS)


def inspect(path: Path) -> RunState:
    if not path.exists() and not path.is_symlink():
        return RunState(State.PENDING)
    try:
        run = RunDir.open(path)
        info = run.info()
    except SrddError as exc:
        return RunState(State.FAILED, str(exc), "unreadable")
    status, reason = info.get("status"), info.get("reason")
    reason = reason if isinstance(reason, str) else None
    if status == "complete":
        return RunState(State.COMPLETE, None, status)
    if status == "running":
        return RunState(State.LIVE if run.is_live() else State.KILLED, reason, status)
    if status == "failed" and _stopped(reason):
        return RunState(State.INTERRUPTED, reason, status)
    return RunState(State.FAILED, reason, status)


@dataclass(frozen=True)
class RunSpec:
    arm: Arm
    seed: int
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


def check_only(only: Sequence[str] | None, names: Sequence[str], control: bool) -> None:
    if only is None:
        return
    unknown = [n for n in only if n not in names]
    if unknown:
        raise SrddError(f"--only: unknown arm(s) {', '.join(unknown)}; the study's arms: {', '.join(names)}")
    if not only or (not control and set(only) == {CONTROL}):
        raise SrddError("nothing selected: an empty --only, or --only control with --no-control")


def plan(settings: Settings, runs: Path, only: Sequence[str] | None = None, control: bool = True) -> list[RunSpec]:
    """Every selected arm x seed, seed by seed: after each pass every arm has one more replicate."""
    check_only(only, [a.name for a in settings.arms], control)
    arms = [a for a in settings.arms if (only is None or a.name in only) and (control or a.name != CONTROL)]
    return [RunSpec(a, s, run_path(runs, a.name, s)) for s in settings.seeds for a in arms]


def foreign(spec: RunSpec) -> str | None:
    """Why the directory at spec.path is not this study's run of its arm and seed (None: it is, or is absent)."""
    path = spec.path
    if path.is_symlink():
        return "it is a symlink"
    if not path.exists():
        return None
    try:
        config = RunDir.open(path).config
    except SrddError as exc:
        return str(exc)
    if config.get("seed") != spec.seed or config.get("name") != spec.name:
        return f"it records name {config.get('name')!r} and seed {config.get('seed')!r}"
    if spec.arm.resolved is not None and config_digest(_as_read_today(config)) != spec.arm.resolved:
        return f"its config is not arm {spec.arm.name}'s config with the study's settings"
    return None


def _as_read_today(config: dict) -> dict:
    """A recorded config as today's schema resolves it: a key added since the run was recorded (at its
    default, which is what the run ran with) is no difference; a config today's schema refuses is one."""
    from rin_train.run_config import load_run_config

    try:
        return load_run_config(config, []).to_dict()
    except SrddError:
        return config


def refuse_foreign(specs: Sequence[RunSpec]) -> None:
    """Every existing run directory of the plan is the study's own, checked before anything runs or moves."""
    bad = [(s.name, why) for s in specs if (why := foreign(s)) is not None]
    if bad:
        name, why = bad[0]
        more = f" (and {len(bad) - 1} more: {', '.join(n for n, _ in bad[1:4])})" if len(bad) > 1 else ""
        raise SrddError(f"{name} was not made by this study ({why}){more}; move it out of --runs, or choose "
                        "another --runs")


def move_aside(path: Path, runs: Path) -> Path:
    """A failed run goes to _failed/<name>-<UTC stamp>: kept for inspection, out of correlate's way."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest = failed_dir(runs) / f"{path.name}-{stamp}"
    n = 1
    while dest.exists():
        n += 1
        dest = failed_dir(runs) / f"{path.name}-{stamp}-{n}"
    failed_dir(runs).mkdir(exist_ok=True)
    if failed_dir(runs).is_symlink() or path.is_symlink():
        raise SrddError(f"{failed_dir(runs)} or {path} is a symlink; a study never moves runs through a symlink")
    os.rename(path, dest)
    return dest
