"""Cost of a W4A4 + noise LoRA training step against a bf16 LoRA step on the same batch.

    python benchmarks/bench_train.py                 # SmolLM2, batch 8 x 128 tokens
    python benchmarks/bench_train.py --model tiny    # seconds, for a quick check
    python benchmarks/bench_train.py --format nvfp4 --mode w4a16   # the SmolLM2 study's policy

A step is forward + backward of the causal-LM loss and an AdamW step on the
LoRA parameters (r=16 on every attention and MLP projection), the part of a
GRPO step whose cost quantization changes. The quantized step runs the fp32
policy the way training does: the rollout noise is applied and restored (so
the loss sees clean weights), then activations and weights go through the
fake quantizer with its STE. Goal (issue criterion): <= 1.5x the bf16 step.

Rows, all in one process on the same token batch, each from the same base
weights: bf16 LoRA (the criterion's baseline), fp32 LoRA (the precision
rin_train keeps the quantized policy's weights in, so the ratio to it isolates
the quantizer), W4A4 with noise on RMSNorm weights (QeRL's AQN: frozen linear
weights stay cached) and W4A4 with noise on linear weights (RIN's default:
perturb and restore write the weights, so they are re-quantized and fresh
noise is drawn once per step), both with fp32 matmuls (`grpo.matmul_dtype:
float32`); both W4A4 rows again on a bf16 policy (`grpo.dtype: bfloat16`:
bf16 weights, norms and noise writes); and both W4A4 rows as `srdd train`
builds its default policy: fp32 weights, norms and noise, the quantized linears'
GEMMs in the dtype `grpo.matmul_dtype: auto` resolves to (bf16 for MXFP4/MXFP6,
whose values bf16 holds exactly, so only the GEMM output rounding differs from
fp32; fp32 for the other formats). The default rows are the ones the criterion
is about. `--mode w4a16` quantizes the weights alone in every quantized row
(`--format nvfp4 --mode w4a16` is the SmolLM2 study's policy). Every policy is built first; then `--warmup` untimed rounds (weight
cache, compiled kernels) and `--steps` timed rounds, each round one step of every
row in turn, so that a noisy machine slows all rows alike. Reported per row: min
and median; ratios are of minima (the least disturbed step of each). The weight
quantizations counted during the timed rounds show whether the frozen-weight
cache hits.

A whole `srdd train` run, phase by phase (time, peak RSS, tokens, bounds): benchmarks/bench_run.py.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from rin_train.noise import NoiseConfig, NoiseInjector
from rin_train.run_config import load_run_config
from srdd.models import load_causal_lm
from srdd.qlinear import LinearQuantConfig, quantize_linears, quantized_modules
from srdd.quiet import library_notices_silenced

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class Row:
    label: str
    dtype: torch.dtype
    quant: LinearQuantConfig | None = None
    """Fake quantization of the quantized rows; None: unquantized."""
    noise_targets: tuple[str, ...] = ()


def default_quant(fmt: str, mode: str) -> LinearQuantConfig:
    """The quantized linears' config of `srdd train`'s default (fp32) `fmt`/`mode` policy, matmul dtype resolved."""
    cfg = load_run_config({"quant": {"format": fmt, "mode": mode}})
    return cfg.quant.linear_config(cfg.grpo.matmul_dtype)


def make_policy(spec: str, row: Row):
    model, _ = load_causal_lm(spec, dtype=row.dtype)
    torch.manual_seed(0)  # identical LoRA initialisation in every row
    with library_notices_silenced():  # as srdd train wraps it: transformers' deprecation notice is not ours
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM",
                                                 target_modules=LORA_TARGETS))
    if row.quant is not None:
        quantize_linears(model, row.quant)
    model.train()
    return model


def weight_quantizations(model) -> int:
    return sum(m.weight_quantizations for _, m in quantized_modules(model))


def one_step(model, opt, batch: torch.Tensor, injector: NoiseInjector | None, step: int, total: int) -> float:
    """Seconds of one training step as training runs it (noise on and off around the rollout, then the update)."""
    t0 = time.perf_counter()
    if injector is not None:
        injector.perturb(step, total)  # what a rollout sees ...
        injector.restore()             # ... and the clean weights the gradient step uses
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def interleaved(policies: dict, batch: torch.Tensor, *, warmup: int, steps: int) -> dict[str, tuple[list[float], int]]:
    """Per row: seconds of each timed step and the weight quantizations during the timed rounds."""
    opts = {label: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-5)
            for label, (m, _) in policies.items()}
    times: dict[str, list[float]] = {label: [] for label in policies}
    counted: dict[str, int] = {}
    for i in range(warmup + steps):
        for label, (model, injector) in policies.items():
            if i == warmup:
                counted[label] = weight_quantizations(model)
            seconds = one_step(model, opts[label], batch, injector, i, warmup + steps)
            if i >= warmup:
                times[label].append(seconds)
    return {label: (times[label], weight_quantizations(m) - counted[label]) for label, (m, _) in policies.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="'smollm2', a model dir, or 'tiny'")
    p.add_argument("--format", default="mxfp4", help="fake-quant format of the quantized rows (default mxfp4)")
    p.add_argument("--mode", default="w4a4", choices=["w4a4", "w4a16"],
                   help="what the quantized rows quantize (default w4a4; the SmolLM2 study trains w4a16)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds (default 2)")
    p.add_argument("--steps", type=int, default=5, help="timed rounds; min and median are reported (default 5)")
    args = p.parse_args()
    if args.warmup < 1 or args.steps < 1:
        p.error("--warmup and --steps must be >= 1")
    spec = args.model
    tmp = tempfile.TemporaryDirectory()
    if spec == "tiny":
        from srdd.tiny import build_tiny_llama

        spec = str(build_tiny_llama(Path(tmp.name) / "tiny", layers=4, hidden=256, intermediate=1024))
    torch.manual_seed(0)
    batch = torch.randint(10, 4000 if args.model != "tiny" else 500, (args.batch, args.tokens))
    quant, default = LinearQuantConfig(args.format, args.mode), default_quant(args.format, args.mode)
    kind = f"{args.mode.upper()} {args.format}"
    default_label = f"default (fp32 weights, {'bf16' if default.matmul_dtype == 'bfloat16' else 'fp32'} matmuls)"
    rows = (Row("bf16 LoRA", torch.bfloat16), Row("fp32 LoRA", torch.float32),
            Row(f"{kind} + RMSNorm noise", torch.float32, quant, ("rmsnorm",)),
            Row(f"{kind} + linear noise", torch.float32, quant, ("linear",)),
            Row(f"{kind} + RMSNorm noise, bf16", torch.bfloat16, quant, ("rmsnorm",)),
            Row(f"{kind} + linear noise, bf16", torch.bfloat16, quant, ("linear",)),
            Row(f"{kind} + RMSNorm noise, {default_label}", torch.float32, default, ("rmsnorm",)),
            Row(f"{kind} + linear noise, {default_label}", torch.float32, default, ("linear",)))
    width = max(len(row.label) for row in rows)
    print(f"model {args.model}, batch {args.batch} x {args.tokens} tokens, {torch.get_num_threads()} threads, "
          f"{args.warmup} warm-up + {args.steps} timed rounds, rows interleaved in each round")
    policies = {}
    for row in rows:
        model = make_policy(spec, row)
        injector = None
        if row.noise_targets:
            injector = NoiseInjector(model, NoiseConfig(targets=list(row.noise_targets), sigma_start=0.05,
                                                        sigma_end=0.005, num_stages=2))
        policies[row.label] = (model, injector)
    results = interleaved(policies, batch, warmup=args.warmup, steps=args.steps)
    minima = {}
    for row in rows:
        times, requant = results[row.label]
        minima[row.label] = min(times)
        cache = (f"  weight quantizations in timed rounds: {requant} "
                 f"({len(list(quantized_modules(policies[row.label][0])))} quantized linears)" if row.quant else "")
        print(f"{row.label:<{width}} min {min(times):7.3f}  median {statistics.median(times):7.3f} s/step{cache}",
              flush=True)
    bf16, fp32 = minima["bf16 LoRA"], minima["fp32 LoRA"]
    for row in rows[2:]:
        q = minima[row.label]
        print(f"ratio of minima {row.label} / bf16 LoRA = {q / bf16:.2f} (goal <= 1.5); / fp32 LoRA = {q / fp32:.2f}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
