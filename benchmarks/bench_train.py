"""Cost of a W4A4 + noise LoRA training step against a bf16 LoRA step on the same batch.

    python benchmarks/bench_train.py                 # SmolLM2, batch 8 x 128 tokens
    python benchmarks/bench_train.py --model tiny    # seconds, for a quick check

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
is about. Each row:
`--warmup` untimed steps (weight cache, compiled kernels), then the median of
`--steps` timed steps. The weight quantizations counted during the timed steps
show whether the frozen-weight cache hits.
"""

from __future__ import annotations

import argparse
import gc
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

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass(frozen=True)
class Row:
    label: str
    dtype: torch.dtype
    quant: LinearQuantConfig | None = None
    """Fake quantization of the W4A4 rows; None: unquantized."""
    noise_targets: tuple[str, ...] = ()


def default_quant(fmt: str) -> LinearQuantConfig:
    """The quantized linears' config of `srdd train`'s default (fp32) W4A4 `fmt` policy, matmul dtype resolved."""
    cfg = load_run_config({"quant": {"format": fmt, "mode": "w4a4"}})
    return cfg.quant.linear_config(cfg.grpo.matmul_dtype)


def make_policy(spec: str, row: Row):
    model, _ = load_causal_lm(spec, dtype=row.dtype)
    torch.manual_seed(0)  # identical LoRA initialisation in every row
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM",
                                             target_modules=LORA_TARGETS))
    if row.quant is not None:
        quantize_linears(model, row.quant)
    model.train()
    return model


def weight_quantizations(model) -> int:
    return sum(m.weight_quantizations for _, m in quantized_modules(model))


def time_steps(model, batch: torch.Tensor, *, warmup: int, steps: int,
               injector: NoiseInjector | None) -> tuple[list[float], int]:
    """Seconds of each timed step, and the weight quantizations during the timed steps."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    times, quantizations = [], 0
    for i in range(warmup + steps):
        if i == warmup:
            quantizations = weight_quantizations(model)
        t0 = time.perf_counter()
        if injector is not None:
            injector.perturb(i, warmup + steps)  # what a rollout sees ...
            injector.restore()                   # ... and the clean weights the gradient step uses
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times, weight_quantizations(model) - quantizations


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="'smollm2', a model dir, or 'tiny'")
    p.add_argument("--format", default="mxfp4", help="fake-quant format of the W4A4 rows (default mxfp4)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per row (default 2)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per row; the median is reported (default 5)")
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
    w4a4, default = LinearQuantConfig(args.format, "w4a4"), default_quant(args.format)
    default_label = f"default (fp32 weights, {'bf16' if default.matmul_dtype == 'bfloat16' else 'fp32'} matmuls)"
    rows = (Row("bf16 LoRA", torch.bfloat16), Row("fp32 LoRA", torch.float32),
            Row(f"W4A4 {args.format} + RMSNorm noise", torch.float32, w4a4, ("rmsnorm",)),
            Row(f"W4A4 {args.format} + linear noise", torch.float32, w4a4, ("linear",)),
            Row(f"W4A4 {args.format} + RMSNorm noise, bf16", torch.bfloat16, w4a4, ("rmsnorm",)),
            Row(f"W4A4 {args.format} + linear noise, bf16", torch.bfloat16, w4a4, ("linear",)),
            Row(f"W4A4 {args.format} + RMSNorm noise, {default_label}", torch.float32, default, ("rmsnorm",)),
            Row(f"W4A4 {args.format} + linear noise, {default_label}", torch.float32, default, ("linear",)))
    width = max(len(row.label) for row in rows)
    print(f"model {args.model}, batch {args.batch} x {args.tokens} tokens, {torch.get_num_threads()} threads, "
          f"{args.warmup} warm-up + {args.steps} timed steps per row")
    medians = {}
    for row in rows:
        model = make_policy(spec, row)
        injector = None
        if row.noise_targets:
            injector = NoiseInjector(model, NoiseConfig(targets=list(row.noise_targets), sigma_start=0.05,
                                                        sigma_end=0.005, num_stages=2))
        times, requant = time_steps(model, batch, warmup=args.warmup, steps=args.steps, injector=injector)
        medians[row.label] = statistics.median(times)
        cache = (f"  weight quantizations in timed steps: {requant} ({len(list(quantized_modules(model)))} "
                 f"quantized linears)" if row.quant else "")
        print(f"{row.label:<{width}} median {medians[row.label]:7.3f} s/step (min {min(times):.3f}, "
              f"max {max(times):.3f}){cache}", flush=True)
        del model, injector
        gc.collect()
    bf16, fp32 = medians["bf16 LoRA"], medians["fp32 LoRA"]
    for row in rows[2:]:
        q = medians[row.label]
        print(f"ratio {row.label} / bf16 LoRA = {q / bf16:.2f} (goal <= 1.5); / fp32 LoRA = {q / fp32:.2f}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
