"""The watchdog fires on a stall (and only then), writing the reason before ending the process."""

import time

from rin_train.watchdog import STALL_EXIT_CODE, Watchdog


def test_fires_on_a_stall_with_the_last_activity():
    stalls, exits = [], []
    wd = Watchdog(0.3, lambda idle, what: stalls.append((idle, what)), poll_s=0.05, exit=exits.append)
    with wd:
        wd.beat("step 7")
        time.sleep(1.0)
    assert exits == [STALL_EXIT_CODE] and stalls[0][0] > 0.3 and stalls[0][1] == "step 7"


def test_beats_keep_it_quiet():
    stalls, exits = [], []
    wd = Watchdog(0.4, lambda idle, what: stalls.append(idle), poll_s=0.05, exit=exits.append)
    with wd:
        for _ in range(10):
            time.sleep(0.1)
            wd.beat("step")
    time.sleep(0.6)  # stopped: no firing after stop
    assert stalls == [] and exits == [] and not wd.fired
