"""Is there an exact faster GEMM for the NVFP4 W4A16 policy than fp32? Measures the facts the answer rests on.

    python benchmarks/nvfp4_gemm.py                 # SmolLM2's linears, the demo's batch shapes
    python benchmarks/nvfp4_gemm.py --model tiny

An NVFP4 weight is y = q·(pts·s8): q an E2M1 element (2 significant bits), s8 an E4M3
block scale (4 bits), pts the fp32 per-tensor scale amax/2688. The idea: factor pts
out, multiply by q·s8 (at most 6 significant bits, so bf16 holds it) in a bf16 GEMM
with fp32 accumulation, and scale the output by pts. Per weight it checks (1) whether
y/pts is bf16-exact and (2) whether fl32(pts·(y/pts)) gives y back bit for bit (the
recipe rounds pts·s8 to fp32 before multiplying by q, so the factored product can
differ in the last bit). Per activation batch it checks (3) how many fp32 activations
bf16 holds exactly: W4A16 does not quantize activations, so the other GEMM operand
is a full 24-bit fp32 value. Then it times, on the demo's shapes, the fp32 GEMM, one
bf16 GEMM (inexact: activations rounded) and the exact-product split x = x1+x2+x3
(three bf16 pieces, each product exact in fp32, three GEMMs), and reports the largest
difference of the split from the fp32 GEMM (a different accumulation order, so not
bitwise equal).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from srdd.formats import fake_quantize
from srdd.models import load_causal_lm

NVFP4_TENSOR_DIVISOR = 2688.0  # 448 (E4M3 max) x 6 (E2M1 max): the recipe's per-tensor scale divisor


def split3(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x = x1 + x2 + x3 with each piece bf16 (exact for normal fp32 values: 3 x 8 significant bits)."""
    x1 = x.to(torch.bfloat16)
    r = x - x1.float()
    x2 = r.to(torch.bfloat16)
    x3 = (r - x2.float()).to(torch.bfloat16)
    return x1, x2, x3


def timed(fn, rounds: int) -> tuple[float, float]:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--tokens", type=int, default=16 * 96, help="activation rows (default: 16 sequences x 96 tokens)")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    spec = args.model
    tmp = tempfile.TemporaryDirectory()
    if spec == "tiny":
        from srdd.tiny import build_tiny_llama

        spec = str(build_tiny_llama(Path(tmp.name) / "tiny", layers=2, hidden=256, intermediate=1024))
    model, _ = load_causal_lm(spec)
    linears = [(n, m) for n, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and "lm_head" not in n and "embed" not in n]
    exact_ratio = same_back = total = 0
    for _, m in linears:
        w = m.weight.detach()
        y = fake_quantize(w, "nvfp4")
        pts = w.abs().max() / NVFP4_TENSOR_DIVISOR
        factor = y / pts
        as_bf16 = factor.to(torch.bfloat16).float()
        exact_ratio += int((as_bf16.double() * pts.double() == factor.double() * pts.double()).sum())
        same_back += int((as_bf16 * pts == y).sum())
        total += y.numel()
    print(f"{len(linears)} linears, {total} weights under NVFP4")
    print(f"(1) y/pts held exactly by bf16 (q*s8 up to fp32 rounding of y/pts): {100 * exact_ratio / total:.3f} %")
    print(f"(2) fl32(pts * bf16(y/pts)) == y bit for bit: {100 * same_back / total:.3f} %")
    torch.manual_seed(0)
    name, m = max(linears, key=lambda nm: nm[1].weight.numel())
    k = m.weight.shape[1]
    x = torch.randn(args.tokens, k) * 0.7
    held = (x.to(torch.bfloat16).float() == x).float().mean().item()
    print(f"(3) fp32 activations bf16 holds exactly (random N(0, 0.49), as a W4A16 GEMM sees them): {100 * held:.2f} %")
    y = fake_quantize(m.weight.detach(), "nvfp4")
    pts = m.weight.detach().abs().max() / NVFP4_TENSOR_DIVISOR
    w16 = (y / pts).to(torch.bfloat16)
    x1, x2, x3 = split3(x)
    ref = torch.nn.functional.linear(x, y)
    # what bf16 GEMMs with fp32 accumulation compute from the pieces (products exact), summed, scaled back
    split = sum(torch.nn.functional.linear(xi.float(), w16.float()) for xi in (x1, x2, x3)) * pts
    print(f"split3 vs fp32 GEMM on {name} [{args.tokens}x{k}] x [{k}x{y.shape[0]}]: max |diff| "
          f"{(split - ref).abs().max().item():.3g}, max |ref| {ref.abs().max().item():.3g}, bitwise equal "
          f"{100 * (split == ref).float().mean().item():.1f} % of outputs")
    rows = {"fp32 GEMM (what the study runs)": lambda: torch.nn.functional.linear(x, y),
            "one bf16 GEMM (activations rounded: inexact)": lambda: torch.nn.functional.linear(x1, w16),
            "split3: three bf16 GEMMs (exact products)": lambda: [torch.nn.functional.linear(xi, w16)
                                                                 for xi in (x1, x2, x3)]}
    for label, fn in rows.items():
        fn()
        lo, med = timed(fn, args.rounds)
        print(f"  {label:<48} min {1e3 * lo:8.2f} ms  median {1e3 * med:8.2f} ms")
    print(f"threads {torch.get_num_threads()}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
