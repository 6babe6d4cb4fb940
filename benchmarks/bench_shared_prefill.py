"""What shared prefill saves on the demo policy: a rollout batch and a 64-problem validation, old vs new path.

    OMP_NUM_THREADS=1 python benchmarks/bench_shared_prefill.py              # 3 interleaved rounds
    OMP_NUM_THREADS=1 python benchmarks/bench_shared_prefill.py --rounds 5 --preset demo@1

On the `demo` policy (SmolLM2-135M-Instruct, NVFP4 W4A16, fp32 GEMMs, LoRA):
- rollout: one step's generation as TRL runs it (grpo.batch_size / num_generations training prompts, each
  num_generations times, sampled at the run's temperature, grpo.max_completion_length new tokens, training
  mode), plain `generate` against `generate` inside rin_train.shared_prefill (each distinct prompt prefilled
  once: the default);
- validation: `rin_train.evaluate.evaluate` on eval.samples test problems at eval.batch_size, without and
  with `shared_prefix` (each batch's common prompt prefix prefilled once: opt-in, eval.shared_prefix).
Each round runs every path once, in alternating order (ABBA over rounds), all in this process; the seconds
printed are min and median over rounds, with the old/new ratio of each. FLOPs are one call of each path's
matrix multiplies and attention, counted by torch's formulas (class Flops). Outputs are compared too: the
rollout's sampled token ids from one seed, and the validation's greedy token ids per problem.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry
from transformers import GenerationConfig

from rin_train.evaluate import evaluate
from rin_train.presets import preset
from rin_train.run_config import RunConfig, load_run_config
from rin_train.shared_prefill import shared_prefill
from rin_train.tasks import Example, load_task, prompt_ids
from rin_train.train import load_policy
from rin_train.trl.engine import grpo_args
from srdd.quiet import library_notices_silenced
from srdd.threads import torch_threads


def rollout(model, tokenizer, cfg: RunConfig, prompts: list[Example]) -> Callable[[bool], list[list[int]]]:
    """One step's rollout generation as TRL makes it: `shared` selects the path; returns each row's token ids."""
    g = cfg.grpo
    args = grpo_args(cfg, Path(tempfile.gettempdir()))
    distinct = prompts[: g.batch_size // g.num_generations]
    rows = [prompt_ids(tokenizer, e) for e in distinct for _ in range(g.num_generations)]
    width, pad = max(map(len, rows)), tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = (torch.arange(width) >= (width - torch.tensor([len(r) for r in rows]))[:, None]).long()
    config = GenerationConfig(do_sample=True, max_new_tokens=g.max_completion_length, temperature=args.temperature,
                              top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
                              repetition_penalty=args.repetition_penalty, pad_token_id=pad,
                              eos_token_id=tokenizer.eos_token_id)

    def run(shared: bool) -> list[list[int]]:
        model.train()
        torch.manual_seed(cfg.seed)
        with torch.no_grad(), shared_prefill(model) if shared else nullcontext():
            return model.generate(input_ids=ids, attention_mask=mask, generation_config=config).tolist()

    return run


@contextmanager
def recorded(model) -> Iterator[list[torch.Tensor]]:
    """Every `model.generate` output inside the block, in order."""
    outputs: list[torch.Tensor] = []
    generate = model.generate

    def recording(*args, **kwargs):
        outputs.append(generate(*args, **kwargs))
        return outputs[-1]

    model.generate = recording
    try:
        yield outputs
    finally:
        del model.generate


def validation(model, tokenizer, cfg: RunConfig, problems: list[Example]) -> Callable[[bool], list[list[int]]]:
    """One validation through `evaluate`: `shared` turns on the prefix split; returns each problem's new tokens."""

    def run(shared: bool) -> list[list[int]]:
        with recorded(model) as outputs:
            evaluate(model, tokenizer, problems, max_new_tokens=cfg.eval.max_new_tokens, quant_label=cfg.quant_label,
                     batch_size=cfg.eval.batch_size, shared_prefix=shared)
        return [row.tolist() for out in outputs for row in out]

    return run


class Flops(TorchDispatchMode):
    """FLOPs of the matrix multiplies and attention dispatched inside the block, by torch's own formulas.

    Not FlopCounterMode: its module tracker registers global forward hooks, and a hooked model gets the
    plain prefill (rin_train.shared_prefill), so it would count the old path twice. The CPU's SDPA kernel
    has no formula of its own; it does the work of the flash kernel's, whose formula counts it."""

    FORMULAS = {**flop_registry, torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
                flop_registry[torch.ops.aten._scaled_dot_product_flash_attention]}

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.FORMULAS.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def flops(run: Callable[[bool], object], shared: bool) -> int:
    """On one thread: a dispatch mode sees its own thread's ops only, and on more, a validation runs its batches
    in worker threads (rin_train.evaluate), where nothing would be counted."""
    with torch_threads(1), Flops() as counter:
        run(shared)
    return counter.total


def differing(old: list[list[int]], new: list[list[int]]) -> tuple[int, int, int]:
    """(rows that differ, tokens that differ, tokens): left-padded rows compared position by position."""
    rows = sum(a != b for a, b in zip(old, new))
    tokens = sum(x != y for a, b in zip(old, new) for x, y in zip(a, b))
    return rows, tokens, sum(map(len, old))


def policy_of(preset_name: str):
    """(run config, model, tokenizer) of a preset's policy, loaded as its run loads it."""
    cfg = load_run_config(None, [], preset=preset(preset_name))
    with library_notices_silenced():
        model, tokenizer, _, _ = load_policy(cfg)
    return cfg, model, tokenizer


def compared(old_label: str, old: list[float], new_label: str, new: list[float]) -> str:
    """Two variants' seconds over interleaved rounds: min and median of each, and new / old of both."""
    return (f"{old_label} {min(old):.2f} / {statistics.median(old):.2f} s, {new_label} {min(new):.2f} / "
            f"{statistics.median(new):.2f} s (min / median of {len(old)}); {new_label} / {old_label} "
            f"{min(new) / min(old):.2f}x (min), {statistics.median(new) / statistics.median(old):.2f}x (median)")


def arguments(doc: str, rounds: int) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="demo")
    p.add_argument("--rounds", type=int, default=rounds)
    return p.parse_args()


def main() -> None:
    args = arguments(__doc__, 3)
    cfg, model, tokenizer = policy_of(args.preset)
    train, test = load_task(cfg.task, cfg.seed)
    cases = {"rollout": rollout(model, tokenizer, cfg, train),
             "validation": validation(model, tokenizer, cfg, test[: cfg.eval.samples])}
    distinct = len({e.prompt for e in test[: cfg.eval.samples]})
    print(f"{args.preset}: {cfg.quant_label}, {torch.get_num_threads()} thread(s); rollout "
          f"{cfg.grpo.batch_size // cfg.grpo.num_generations} prompts x {cfg.grpo.num_generations}, "
          f"{cfg.grpo.max_completion_length} new tokens; validation {cfg.eval.samples} problems ({distinct} distinct) "
          f"in batches of {cfg.eval.batch_size}, {cfg.eval.max_new_tokens} new tokens")
    for name, run in cases.items():
        old, new = run(False), run(True)
        rows, tokens, total = differing(old, new)
        f_old, f_new = flops(run, False), flops(run, True)
        print(f"{name}: outputs {'identical' if old == new else 'DIFFER'} ({rows} of {len(old)} rows, {tokens} of "
              f"{total} token ids differ); FLOPs {f_old / 1e9:.1f} G -> {f_new / 1e9:.1f} G ({f_old / f_new:.2f}x)")
    seconds: dict[tuple[str, bool], list[float]] = {(name, shared): [] for name in cases for shared in (False, True)}
    for r in range(args.rounds):
        for name, run in cases.items():
            for shared in (False, True) if r % 2 == 0 else (True, False):
                t0 = time.perf_counter()
                run(shared)
                seconds[name, shared].append(time.perf_counter() - t0)
    for name in cases:
        old, new = seconds[name, False], seconds[name, True]
        print(f"{name}: old {min(old):.2f} / {statistics.median(old):.2f} s, new {min(new):.2f} / "
              f"{statistics.median(new):.2f} s (min / median of {args.rounds}); old/new "
              f"{min(old) / min(new):.2f}x (min), {statistics.median(old) / statistics.median(new):.2f}x (median)")


if __name__ == "__main__":
    main()
