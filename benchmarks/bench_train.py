"""Cost of a W4A4 + noise LoRA training step against an unquantized LoRA step on the same batch.

    python benchmarks/bench_train.py                 # SmolLM2, batch 8 x 128 tokens
    python benchmarks/bench_train.py --model tiny    # seconds, for a quick check

A step is forward + backward of the causal-LM loss and an optimizer step on
the LoRA parameters; the quantized step also perturbs and restores the
RMSNorm weights (rollout noise) and runs activations and weights through the
MXFP4 fake quantizer with its STE. Frozen weights are quantized once and
cached, so later steps pay only for activations. Goal: <= 1.5x the bf16 step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from rin_train.noise import NoiseConfig, NoiseInjector
from srdd.models import load_causal_lm
from srdd.qlinear import LinearQuantConfig, quantize_linears


def make_policy(spec: str, dtype: torch.dtype, quant: bool):
    model, _ = load_causal_lm(spec, dtype=dtype)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                             "gate_proj", "up_proj", "down_proj"]))
    if quant:
        quantize_linears(model, LinearQuantConfig("mxfp4", "w4a4"))
    model.train()
    return model


def time_steps(model, batch: torch.Tensor, steps: int, injector: NoiseInjector | None) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        if injector is not None:
            injector.perturb(i, steps + 1)  # what a rollout sees ...
            injector.restore()              # ... and the clean weights the gradient step uses
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first step pays one-time costs (weight cache, kernel compile)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2", help="'smollm2', a model dir, or 'tiny'")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--steps", type=int, default=4)
    args = p.parse_args()
    spec = args.model
    tmp = tempfile.TemporaryDirectory()
    if spec == "tiny":
        from srdd.tiny import build_tiny_llama

        spec = str(build_tiny_llama(Path(tmp.name) / "tiny", layers=4, hidden=256, intermediate=1024))
    torch.manual_seed(0)
    batch = torch.randint(10, 4000 if args.model != "tiny" else 500, (args.batch, args.tokens))
    results = {}
    for label, dtype, quant in (("bf16 LoRA", torch.bfloat16, False), ("fp32 LoRA", torch.float32, False),
                                ("fp32 W4A4 mxfp4 + noise", torch.float32, True)):
        model = make_policy(spec, dtype, quant)
        injector = NoiseInjector(model, NoiseConfig(targets=["rmsnorm"], sigma_mode="absolute",
                                                    sigma_start=0.01, sigma_end=0.001)) if quant else None
        results[label] = time_steps(model, batch, args.steps, injector)
        print(f"{label:<26} {results[label]:7.3f} s/step")
        del model
    q = results["fp32 W4A4 mxfp4 + noise"]
    print(f"ratio W4A4+noise / bf16 LoRA = {q / results['bf16 LoRA']:.2f}  (goal <= 1.5)")
    print(f"ratio W4A4+noise / fp32 LoRA = {q / results['fp32 LoRA']:.2f}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
