"""Detect a stalled training step and end the run as failed, with the reason on disk."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable


class Watchdog:
    """Calls `on_stall(seconds)` and exits the process when no heartbeat arrives in `timeout_s`."""

    def __init__(self, timeout_s: float, on_stall: Callable[[float], None], *, poll_s: float = 1.0,
                 exit_code: int = 3) -> None:
        self.timeout_s = timeout_s
        self.on_stall = on_stall
        self.poll_s = poll_s
        self.exit_code = exit_code
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="srdd-watchdog", daemon=True)

    def beat(self) -> None:
        self._last = time.monotonic()

    def start(self) -> Watchdog:
        self.beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            idle = time.monotonic() - self._last
            if idle > self.timeout_s:
                self.on_stall(idle)
                os._exit(self.exit_code)
