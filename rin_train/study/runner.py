"""A study: every arm of a `srdd calibrate --suite` (plus a no-noise control) x every seed, run one
after another. The modules beside this one hold the parts: `layout` (what lives where under
RUNS_DIR, and the names and links refused there), `settings` (the suite, seeds and overrides,
recorded once), `rundirs` (each run's state, and the runs the study did not make), `child` (one
`srdd train` process) and `ledger` (the attempts file and the study's lock)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rin_train.rundir import now_iso
from rin_train.study.child import raise_stop, run_child, train_argv
from rin_train.study.layout import FAILED_DIR
from rin_train.study.ledger import log_attempt
from rin_train.study.rundirs import RunSpec, RunState, State, inspect, move_aside
from rin_train.study.settings import Settings


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _outcome(path: Path) -> RunState:
    state = inspect(path)
    if state.state is State.PENDING:
        return RunState(State.FAILED, "the trainer stopped before creating the run directory (see its error above)")
    return state


def _describe(state: RunState) -> str:
    if state.state is State.KILLED:
        return "killed (left running by a process that died)"
    if state.state is State.INTERRUPTED:
        return f"stopped ({state.reason})"
    word = state.status if state.state is State.FAILED and state.status else state.state.value
    return word + (f" ({state.reason})" if state.reason else "")


@dataclass
class Tally:
    ran: int = 0
    complete: int = 0
    not_complete: int = 0


def run_study(settings: Settings, runs: Path, specs: list[RunSpec], *, retry_failed: bool,
              say: Callable[[str], None] = print) -> Tally:
    """Run, resume or skip every spec, one after another. Ctrl-C/SIGTERM: stop the child, then raise."""
    tally = Tally()
    previous = {s: signal.signal(s, raise_stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        for i, spec in enumerate(specs, 1):
            head = f"[{i}/{len(specs)}] {spec.name}:"
            state = inspect(spec.path)
            if state.state is State.COMPLETE:
                say(f"{head} complete, skipped")
                tally.complete += 1
                continue
            if state.state is State.LIVE:
                say(f"{head} being trained by another live process, skipped")
                tally.not_complete += 1
                continue
            if state.state is State.FAILED:
                if not retry_failed:
                    say(f"{head} {_describe(state)}; not retried (pass --retry-failed to move it to "
                        f"{FAILED_DIR}/ and run it again)")
                    tally.not_complete += 1
                    continue
                say(f"{head} {_describe(state)}; moved to {move_aside(spec.path, runs).relative_to(runs)}")
            resume = state.state.resumable
            action = "resume" if resume else "new"
            say(f"{head} {'resuming (' + _describe(state) + ')' if resume else 'running'} ...")
            started, t0 = now_iso(), time.monotonic()
            code: int | None = None
            try:
                code = run_child(train_argv(spec, settings.sets, resume=resume, preset_name=settings.preset))
            finally:
                wall = time.monotonic() - t0
                outcome = _outcome(spec.path)
                log_attempt(runs, {"run": spec.name, "action": action, "started": started, "wall_s": round(wall, 3),
                                   "exit_code": code, "status": outcome.status})
                tally.ran += 1
                if code is None:
                    say(f"{head} {_describe(outcome)} after {duration(wall)}; the next `srdd study run` resumes it")
            if outcome.state is State.COMPLETE:
                tally.complete += 1
            else:
                tally.not_complete += 1
            say(f"{head} {_describe(outcome)} in {duration(wall)}")
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return tally
