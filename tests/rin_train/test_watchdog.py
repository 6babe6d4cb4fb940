"""The watchdog fires on a stall (and only then), writing the reason before ending the process.

A fake clock drives `check()` directly, so no test depends on how fast a loaded machine sleeps.
"""

import time

from rin_train.watchdog import STALL_EXIT_CODE, Watchdog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _watchdog(timeout_s: float, clock: Clock):
    stalls, exits = [], []
    wd = Watchdog(timeout_s, lambda idle, what: stalls.append((idle, what)), exit=exits.append, clock=clock)
    return wd, stalls, exits


def test_fires_on_a_stall_with_the_last_activity():
    clock = Clock()
    wd, stalls, exits = _watchdog(30.0, clock)
    wd.beat("step 7")
    clock.now += 30.0
    assert not wd.check() and exits == []  # exactly the timeout is not yet a stall
    clock.now += 0.5
    assert wd.check()
    assert exits == [STALL_EXIT_CODE] and stalls == [(30.5, "step 7")] and wd.fired


def test_beats_keep_it_quiet_and_stop_disarms_it():
    clock = Clock()
    wd, stalls, exits = _watchdog(30.0, clock)
    for step in range(10):
        clock.now += 29.0
        wd.beat(f"step {step}")
        assert not wd.check()
    wd.stop()
    clock.now += 1e6
    assert not wd.check() and stalls == [] and exits == [] and not wd.fired


def test_the_polling_thread_fires_on_its_own():
    fired, exits = [], []
    clock = Clock()
    wd = Watchdog(30.0, lambda idle, what: fired.append(what), poll_s=0.01, exit=exits.append, clock=clock)
    with wd:
        wd.beat("step 3")
        clock.now += 31.0  # the step stalls; the thread notices at its next poll
        deadline = time.monotonic() + 60
        while not exits and time.monotonic() < deadline:
            time.sleep(0.01)
    assert fired == ["step 3"] and exits == [STALL_EXIT_CODE]
