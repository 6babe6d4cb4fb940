"""What holding frozen E2M1 weights packed (SRDD_PACKED_WEIGHTS=1) costs a run's GEMMs: fp32 caches against
srdd.formats.packed, one demo policy.

    python benchmarks/bench_packed_weights.py               # 3 interleaved rounds
    python benchmarks/bench_packed_weights.py --rounds 6

The `demo` policy (SmolLM2 under NVFP4 W4A16, fp32 GEMMs, LoRA) with its frozen weights' quantized values held as
fp32 tensors (as before srdd.formats.packed) and packed (E2M1 codes and fp32 block scales, unpacked into a
per-thread buffer at every GEMM and again in the backward), alternating the order every round, in this process.
Each round times one step's rollout generation as the trl engine runs it (each distinct prompt prefilled once,
draws made ahead) and one update-sized forward and backward (8 rows of 100 tokens, LoRA gradients). Prints the
bytes the caches hold, whether the sampled tokens and the loss are identical, and min and median seconds of each.
"""

from __future__ import annotations

import os
import time

from srdd.threads import passive_openmp_wait

passive_openmp_wait()  # as the `srdd` command runs: before anything loads torch and OpenMP reads its settings

import torch  # noqa: E402
from bench_shared_prefill import arguments, compared, policy_of, rollout  # noqa: E402

import srdd.qlinear as qlinear  # noqa: E402
from rin_train.prefetched_draws import prefetched_draws  # noqa: E402
from rin_train.shared_prefill import shared_prefill  # noqa: E402
from rin_train.tasks import load_task  # noqa: E402
from srdd.memory import PACKED_WEIGHTS, release_free_memory  # noqa: E402


def main() -> None:
    args = arguments(__doc__, 3)
    cfg, model, tokenizer = policy_of(args.preset)
    generate = rollout(model, tokenizer, cfg, load_task(cfg.task, cfg.seed)[0])
    ids = torch.randint(4, 4000, (8, 100), generator=torch.Generator().manual_seed(0))
    linears = [m for m in model.modules() if isinstance(m, qlinear.QuantLinear)]

    def hold(packed: bool) -> int:
        """Caches refilled the one way or the other (outside the timing); returns the bytes they hold."""
        os.environ[PACKED_WEIGHTS] = "1" if packed else "0"
        for linear in linears:
            linear.drop_weight_cache()
        release_free_memory()
        with torch.no_grad():
            model(input_ids=ids[:1, :8])
        return sum(linear.cache_bytes for linear in linears)

    def roll() -> list[list[int]]:
        with shared_prefill(model), prefetched_draws():
            return generate(True)

    def update() -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach()

    held, results = {}, {}
    for packed in (False, True):
        held[packed] = hold(packed)
        results[packed] = roll(), update()
    print(f"{args.preset}: quantized weights {held[False] / 2**20:.0f} MiB as fp32, {held[True] / 2**20:.0f} MiB packed; "
          f"sampled tokens {'identical' if results[False][0] == results[True][0] else 'DIFFER'}, loss "
          f"{'identical' if torch.equal(results[False][1], results[True][1]) else 'DIFFERS'}")
    seconds = {(phase, packed): [] for phase in ("rollout", "update") for packed in (False, True)}
    for r in range(args.rounds):
        for packed in (False, True) if r % 2 == 0 else (True, False):
            hold(packed)
            t0 = time.perf_counter()
            roll()
            t1 = time.perf_counter()
            update()
            seconds["rollout", packed].append(t1 - t0)
            seconds["update", packed].append(time.perf_counter() - t1)
    for phase in ("rollout", "update"):
        print(f"{phase}: {compared('fp32', seconds[phase, False], 'packed', seconds[phase, True])}")


if __name__ == "__main__":
    main()
