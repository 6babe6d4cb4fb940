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
from collections.abc import Iterator
from contextlib import contextmanager

WAIT_POLICY = "OMP_WAIT_POLICY"


def passive_openmp_wait() -> None:
    """OMP_WAIT_POLICY=PASSIVE for this process and its children, unless the user chose a policy."""
    os.environ.setdefault(WAIT_POLICY, "PASSIVE")


def small_gemm_threads() -> int:
    """Threads for forwards of few rows (generation's decode steps; the update's passes with shared prompts):
    one where threads wait passively, else all of torch's.

    Such a forward is hundreds of parallel regions of microseconds each, and a passively waiting thread is woken
    (a futex call) for every one: on 2 cores that costs more than the second core gains. Measured on the demo
    policy (SmolLM2, 2 cores, passive waiting): a rollout's generation 10.0 s on 2 threads against 7.0 s on 1;
    a step's update with shared prompts (rin_train.trl.shared_prompt) 12.5 s against 10.9 s, where TRL's
    update, whose passes are 4x larger, gains from the second thread (19.0 s on 1, 15.1 s on 2). Spinning threads
    (OMP_WAIT_POLICY=ACTIVE: a machine to yourself) keep every thread. On SmolLM2's shapes MKL gives the same bits
    on 1 thread as on 2 (generated tokens, log-probs and gradients compared), and the golden runs are unchanged;
    not on every shape (a tiny Llama's fp32 decode steps differ in their last bits). Like OMP_NUM_THREADS, the
    thread count is the machine's business, not a run setting: run.json does not record it."""
    import torch

    passive = os.environ.get(WAIT_POLICY, "").strip().upper() == "PASSIVE"
    return 1 if passive else torch.get_num_threads()


PASS_WORKERS = "SRDD_PASS_WORKERS"


def update_workers() -> int:
    """How many of a GRPO step's update passes run side by side (rin_train.trl.parallel_passes): as many as
    torch has threads where a pass runs on one (small_gemm_threads), else 1; SRDD_PASS_WORKERS caps it (1:
    one pass at a time, each pass's activations alive alone). The bits are the same either way, so like the
    thread count it is the machine's business, not a run setting. A bad cap is refused whatever the policy:
    `srdd train` asks before it loads a model."""
    import torch

    from srdd.errors import SrddError

    cap = os.environ.get(PASS_WORKERS, "").strip()
    if cap and (not cap.isdigit() or int(cap) < 1):
        raise SrddError(f"{PASS_WORKERS} must be a positive whole number, got {cap!r}")
    if small_gemm_threads() != 1:
        return 1
    threads = torch.get_num_threads()
    return min(threads, int(cap)) if cap else threads


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n` inside the block, put back after."""
    import torch

    previous = torch.get_num_threads()
    if n != previous:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != previous:
            torch.set_num_threads(previous)
