"""Detect a stalled training step and end the run as failed, with the reason on disk (lesson 11).

The engine calls `beat(what)` whenever work progresses (a step begins or ends,
a validation batch finishes). When no beat arrives for `timeout_s`, the watchdog
calls `on_stall(idle_seconds, what)` — which writes the failed status and its
reason into run.json — and then ends the process with `exit_code`: a stalled
step is usually stuck in native code where no Python exception can reach it,
so the only reliable way out is to exit.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

STALL_EXIT_CODE = 3


class Watchdog:
    def __init__(self, timeout_s: float, on_stall: Callable[[float, str], None], *, poll_s: float | None = None,
                 exit_code: int = STALL_EXIT_CODE, exit: Callable[[int], None] = os._exit,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self.on_stall = on_stall
        self.poll_s = poll_s if poll_s is not None else min(1.0, self.timeout_s / 4)
        self.exit_code = exit_code
        self._exit = exit
        self._clock = clock
        self._last = clock()
        self._what = "start"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rin-train-watchdog", daemon=True)
        self.fired = False

    def beat(self, what: str = "") -> None:
        self._last = self._clock()
        if what:
            self._what = what

    def start(self) -> Watchdog:
        """Arm it (idempotent: a second call is a beat)."""
        self.beat("start")
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def check(self) -> bool:
        """One look at the clock: when the last beat is older than timeout_s, call on_stall, then exit.

        The polling thread calls this every poll_s; it is public so a test can
        drive it with its own clock instead of sleeping.
        """
        idle = self._clock() - self._last
        if idle <= self.timeout_s or self._stop.is_set():
            return False
        self.fired = True
        print(f"watchdog: no progress for {idle:.0f} s (last: {self._what}); ending the run as failed",
              file=sys.stderr, flush=True)
        try:
            self.on_stall(idle, self._what)
        finally:
            self._exit(self.exit_code)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self.check():
                return
