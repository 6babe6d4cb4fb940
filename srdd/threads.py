"""How torch's CPU threads wait for each other: passively, so a shared machine slows a run in proportion.

torch's OpenMP threads spin while they wait at the end of every parallel region
(GNU OpenMP's default). On a machine where another process holds a core, the
spinning threads take CPU from the one that has work, and a run slowed 6-20x, or
12x on the `learn` preset (benchmarks/bench_busy.py). With OMP_WAIT_POLICY=PASSIVE
they sleep instead. OpenMP reads the variable once, when torch loads it, so it is
set before anything imports torch: first thing in the `srdd` command.
"""

from __future__ import annotations

import os

WAIT_POLICY = "OMP_WAIT_POLICY"


def passive_openmp_wait() -> None:
    """OMP_WAIT_POLICY=PASSIVE for this process and its children, unless the user chose a policy."""
    os.environ.setdefault(WAIT_POLICY, "PASSIVE")
