"""What sampling's draws made ahead save on one demo rollout: torch's multinomial against rin_train.prefetched_draws.

    python benchmarks/bench_rollout_draws.py               # 4 interleaved rounds
    python benchmarks/bench_rollout_draws.py --rounds 6

One step's rollout generation of the `demo` policy as the trl engine runs it (each distinct prompt prefilled once,
decode steps on srdd.threads.small_gemm_threads: one thread where threads wait passively, as `srdd` sets them),
with torch's own multinomial and inside `prefetched_draws()`, alternating the order every round, in this process.
Prints min and median seconds of each, their ratio, whether the sampled token ids and the generator's state
after the rollout are identical, and how many of the rollout's sampling calls were served by a draw made ahead.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

from srdd.threads import passive_openmp_wait

passive_openmp_wait()  # as the `srdd` command runs: before anything loads torch and OpenMP reads its settings

import torch  # noqa: E402
from bench_shared_prefill import arguments, compared, policy_of, rollout  # noqa: E402

from rin_train.prefetched_draws import prefetched_draws  # noqa: E402
from rin_train.shared_prefill import shared_prefill  # noqa: E402
from rin_train.tasks import load_task  # noqa: E402


def main() -> None:
    args = arguments(__doc__, 4)
    cfg, model, tokenizer = policy_of(args.preset)
    generate = rollout(model, tokenizer, cfg, load_task(cfg.task, cfg.seed)[0])

    def run(ahead: bool) -> tuple[list[list[int]], torch.Tensor, int]:
        with shared_prefill(model), prefetched_draws() if ahead else nullcontext() as sampler:
            tokens = generate(True)
        return tokens, torch.default_generator.get_state(), getattr(sampler, "prefetched", 0)

    plain, ahead = run(False), run(True)
    print(f"{args.preset}: sampled tokens {'identical' if plain[0] == ahead[0] else 'DIFFER'}, generator state after "
          f"{'identical' if torch.equal(plain[1], ahead[1]) else 'DIFFERS'}; {ahead[2]} sampling calls served ahead")
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for r in range(args.rounds):
        for variant in (False, True) if r % 2 == 0 else (True, False):
            t0 = time.perf_counter()
            run(variant)
            seconds[variant].append(time.perf_counter() - t0)
    print("rollout: " + compared("torch's draws", seconds[False], "made ahead", seconds[True]))


if __name__ == "__main__":
    main()
