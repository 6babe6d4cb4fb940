"""Each run is a child process `python -m srdd train`: a crash or an out-of-memory kill costs one run,
not the study; its output goes straight to this terminal. Ctrl-C and SIGTERM stop the child so that
it marks its run failed (resumable) before the study stops."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence

from rin_train.study.layout import step0_dir
from rin_train.study.rundirs import RunSpec

SIGINT_GRACE_S = 10.0   # Ctrl-C in a terminal reaches the child too: let it mark itself failed first
SIGTERM_GRACE_S = 120.0  # then SIGKILL (the run is left "running", lock free: resumed next time)


def train_argv(spec: RunSpec, sets: Sequence[str], *, resume: bool, preset_name: str | None = None) -> list[str]:
    """The child's command line (`python -m srdd train`, this interpreter); every run of the study shares its
    step-0 validation through RUNS/_study/step0 (rin_train.step0)."""
    base = [sys.executable, "-m", "srdd", "train", "--step0-cache", str(step0_dir(spec.path.parent))]
    if resume:
        return [*base, "--resume", "--out", str(spec.path)]
    return [*base, str(spec.arm.config), "--out", str(spec.path), "--engine", "trl",
            *(["--preset", preset_name] if preset_name else []), "--set", f"seed={spec.seed}",
            *[x for s in sets for x in ("--set", s)]]


class Stop(Exception):
    """SIGTERM or SIGHUP reached `srdd study run`: stop the child, then the study."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def raise_stop(signum, frame):
    raise Stop(signum)


def _wait(proc: subprocess.Popen, timeout: float) -> bool:
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def stop_child(proc: subprocess.Popen, ctrl_c: bool) -> None:
    """Stop the child so that it marks its run failed (resumable); SIGKILL only if it does not stop.

    After Ctrl-C in a terminal the child has its own SIGINT already: give it time to write
    run.json before sending SIGTERM (which, arriving during that cleanup, would kill it outright).
    A second Ctrl-C or SIGTERM kills the child at once; the run is then resumed as a killed one.
    """
    try:
        if ctrl_c and _wait(proc, SIGINT_GRACE_S):
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        if not _wait(proc, SIGTERM_GRACE_S):
            proc.kill()
            proc.wait()
    except (KeyboardInterrupt, Stop):
        proc.kill()
        proc.wait()


def run_child(argv: list[str]) -> int:
    """Run one `srdd train`, its output on this terminal; on Ctrl-C/SIGTERM stop it, then re-raise."""
    proc = subprocess.Popen(argv)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop_child(proc, ctrl_c=True)
        raise
    except Stop:
        stop_child(proc, ctrl_c=False)
        raise
