"""How a run slows when another process takes CPU: thread count and OpenMP wait policy, measured.

    python benchmarks/bench_busy.py                       # learn preset, 6 steps, 2 rounds
    python benchmarks/bench_busy.py --preset demo --set grpo.steps=2 --rounds 1

Every round runs the same `srdd train` configuration (as benchmarks/bench_run.py profiles
it) under each thread setting, once alone and once beside a competitor: a process
spinning on one core, as a second job on a shared machine would. The settings:
torch's default thread count with OpenMP's default wait policy (threads spin while
they wait for each other), the same as the `srdd` command sets it (srdd.threads:
OMP_WAIT_POLICY=PASSIVE, they sleep), and one thread. Rounds interleave every setting, so a machine whose load drifts slows
them alike. Reported per setting: wall and CPU seconds (min, median) alone and
beside the competitor, and the slowdown the competitor causes. Taking one core of
two leaves half the CPU, so a run that slows in proportion to the CPU it loses
slows about 2x (one thread: less, if the scheduler lets it keep its core).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
from pathlib import Path

from bench_run import run_child

SETTINGS: dict[str, tuple[dict[str, str | None], bool]] = {
    # (environment, whether the child applies what the `srdd` command sets: srdd.threads)
    "default threads, OpenMP's default wait policy": ({"OMP_NUM_THREADS": None, "OMP_WAIT_POLICY": None}, False),
    "default threads, as srdd sets them (PASSIVE)": ({"OMP_NUM_THREADS": None, "OMP_WAIT_POLICY": None}, True),
    "1 thread": ({"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": None}, True),
}


def spin() -> None:
    while True:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="learn")
    p.add_argument("--set", action="append", default=None, metavar="KEY=VALUE")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    sets = args.set if args.set is not None else ["grpo.steps=6", "eval.every=6", "grpo.save_every=6"]
    results: dict[tuple[str, bool], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-busy-") as tmp:
        for r in range(args.rounds):
            for label, (env, as_srdd) in SETTINGS.items():
                for busy in (False, True):
                    competitor = multiprocessing.Process(target=spin, daemon=True) if busy else None
                    if competitor is not None:
                        competitor.start()
                    try:
                        doc = run_child(None, args.preset, sets, 1, Path(tmp), env, as_srdd)
                    finally:
                        if competitor is not None:
                            competitor.terminate()
                            competitor.join()
                    results.setdefault((label, busy), []).append(doc)
                    print(f"round {r + 1}: {label}{', competitor' if busy else ''}: {doc['wall_s']:.1f} s wall, "
                          f"{doc['cpu_s']:.1f} s CPU, {doc['threads']} threads", flush=True)
    print()
    for label in SETTINGS:
        alone, busy = results[(label, False)], results[(label, True)]
        walls = {k: [d["wall_s"] for d in v] for k, v in (("alone", alone), ("busy", busy))}
        cpus = {k: [d["cpu_s"] for d in v] for k, v in (("alone", alone), ("busy", busy))}
        ratio = [b / a for a, b in zip(walls["alone"], walls["busy"])]
        print(f"{label}: wall alone min {min(walls['alone']):.1f} median {statistics.median(walls['alone']):.1f} s, "
              f"beside a competitor min {min(walls['busy']):.1f} median {statistics.median(walls['busy']):.1f} s "
              f"(slowdown median {statistics.median(ratio):.2f}x); CPU alone {statistics.median(cpus['alone']):.1f} s, "
              f"beside {statistics.median(cpus['busy']):.1f} s")


if __name__ == "__main__":
    main()
