"""What the rollout noise costs a vLLM worker per weight sync and per step, at Qwen2.5-1.5B's shapes.

    python benchmarks/rollout_noise_cost.py                      # CPU, 1 thread (vLLM's OMP_NUM_THREADS=1), 1 layer
    python benchmarks/rollout_noise_cost.py --device cuda --layers 28

A synthetic model holds decoder layers of Qwen2.5-1.5B's linear shapes (hidden 1536, MLP 8960, 12 query
and 2 KV heads of 128: 46.8 M weights a layer, 1.31 B in 28) in bf16 under MXFP4 W4A4, with linear noise
targets as the verl rollout perturbs them (masters in fp32, effective sigma always measured). Timed:
- full sync: building the injector (fp32 masters, RMS, and under `sigma_basis: effective` the 26-point
  curves): what every sync cost before issue 26, and what a sync that changes every weight still costs;
- LoRA sync: `refresh()` after a sync that left the base weights unchanged (verl then sends the adapters
  alone): the masters are compared with the weights and kept, curves included;
- step: one perturbation (draws, write, nominal and effective sigma read back).
Times (wall, and CPU seconds of the process) are scaled from --layers to 28 layers, linearly (every layer
costs the same).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from rin_train.noise import NoiseConfig, NoiseInjector
from srdd.qlinear import LinearQuantConfig, quantize_linears

QWEN25_1P5B = {"q_proj": (1536, 1536), "k_proj": (256, 1536), "v_proj": (256, 1536), "o_proj": (1536, 1536),
               "gate_proj": (8960, 1536), "up_proj": (8960, 1536), "down_proj": (1536, 8960)}
"""[out, in] of each linear of a Qwen2.5-1.5B decoder layer (config.json: hidden_size 1536,
intermediate_size 8960, 12 attention heads, 2 key-value heads, head_dim 128)."""
LAYERS = 28


def synthetic_model(layers: int, device: str) -> nn.Module:
    """model.layers[i].<name>: bias-free bf16 linears of those shapes, N(0, 0.02^2) weights."""
    model = nn.Module()
    model.model = nn.Module()
    model.model.layers = nn.ModuleList()
    for _ in range(layers):
        layer = nn.Module()
        for name, (rows, cols) in QWEN25_1P5B.items():
            linear = nn.Linear(cols, rows, bias=False, device="meta")
            linear.weight = nn.Parameter(torch.empty(rows, cols, dtype=torch.bfloat16, device=device).normal_(0, 0.02),
                                         requires_grad=False)
            layer.add_module(name, linear)
        model.model.layers.append(layer)
    quantize_linears(model, LinearQuantConfig("mxfp4", "w4a4"))
    return model


def timed(fn, device: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): on a shared machine the CPU seconds are what one
    uncontended thread would take; on a GPU the wall time is what the step waits."""
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = synthetic_model(args.layers, args.device)
    scale = LAYERS / args.layers
    for basis in ("nominal", "effective"):
        cfg = NoiseConfig(targets=["linear"], sigma_basis=basis)
        injector = None

        def build():
            nonlocal injector
            injector = NoiseInjector(model, cfg, seed=0, effective=True, workers=args.threads)

        full = timed(build, args.device)
        lora = timed(injector.refresh, args.device)
        step = timed(lambda: injector.perturb(3, 10), args.device)
        injector.restore()
        cost = ", ".join(f"{what} {wall * scale:.1f} s ({cpu * scale:.1f} CPU s)"
                         for what, (wall, cpu) in (("full sync", full), ("LoRA sync", lora), ("step", step)))
        print(f"{args.device}, {args.threads} thread(s), sigma_basis {basis}, scaled from {args.layers} to {LAYERS} "
              f"layers: {cost}", flush=True)


if __name__ == "__main__":
    main()
