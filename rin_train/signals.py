"""SIGTERM/SIGHUP as an exception, so a killed run is marked failed with a reason, not left "running"."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(Exception):
    """SIGTERM (or SIGHUP) reached the training process."""


@contextmanager
def terminate_on_signals() -> Iterator[None]:
    def handler(signum, frame):
        raise Terminated(f"terminated by {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
