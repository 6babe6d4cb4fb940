"""Fake-quant kernel throughput against memory copies, measured in one process.

    python benchmarks/bench_fakequant.py                      # 4096x4096, fp32 and bf16, CPU
    python benchmarks/bench_fakequant.py --backends auto,compiled,eager
    python benchmarks/bench_fakequant.py --formats mxfp4,nvfp4 --device cuda
    python benchmarks/bench_fakequant.py --variants avx2 --stat min   # one kernel build; best of the rounds
    THP_MEM_ALLOC_ENABLE=1 python benchmarks/bench_fakequant.py   # clone on huge pages too (see below)

For each format, dtype and backend (and, for the C kernel, each build of it
this CPU runs: portable, avx2, avx512): GB/s of the allocating round trip (bytes
read + written), and the ratios allocating / x.clone(), out= / y.copy_(x) and
statistics pass / y.copy_(x) (higher is better; 1.0 = as fast as the copy).
All ops of a dtype are timed in turns, so each ratio compares calls made under
the same machine conditions.
A large new result of the C kernel is a mapping of its own on transparent huge pages
(srdd.formats.native.new_result), while torch allocates clone's on 4 KiB pages unless
THP_MEM_ALLOC_ENABLE=1 (or the system's THP setting is `always`): with it both get huge
pages and the allocating ratio shows the kernel's own work, without it what a caller
gets by default.
`auto` is what callers get: the C kernel for the quantized formats on the CPU, Inductor
elsewhere. Also torchao's MX round trip when torchao is importable.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch

from srdd.formats import fake_quantize, list_formats, native, quant_stats, set_backend

STATS = {"median": statistics.median, "min": min}


def timed_in_turns(ops: dict[str, Callable[[], object]], repeat: int, sync, stat=statistics.median) -> dict[str, float]:
    """Seconds per call of each op (`stat` over the rounds), timed in turns (one call of each per round).

    Memory bandwidth and page-fault cost here drift by up to 2x between phases of one process; timing the
    ops in turns puts every ratio's numerator and denominator under the same conditions. On a machine other
    work shares, the min over rounds is the closer estimate of what the op costs.
    """
    for fn in ops.values():
        fn(), fn()
    sync()
    times: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(repeat):
        for name, fn in ops.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - t0)
    return {name: stat(t) for name, t in times.items()}


def timed(fn: Callable[[], object], repeat: int, sync) -> float:
    return timed_in_turns({"op": fn}, repeat, sync)["op"]


def on_backend(backend: str, variant: str | None, fn: Callable[[], object]) -> Callable[[], object]:
    """fn on `backend`, with the C kernel's build `variant` (None: the one callers get)."""
    def call() -> object:
        set_backend(backend)
        if variant is None:
            os.environ.pop(native.VARIANT_ENV, None)
        else:
            os.environ[native.VARIANT_ENV] = variant
        return fn()
    return call


def kernel_rows(backends: list[str], variants: list[str]) -> list[tuple[str, str | None]]:
    """(backend, build) pairs: one per build for the backends that run the C kernel, one for the others."""
    return [(b, v) for b in backends for v in (variants if b in ("auto", "native") else [None])]


def torchao_round_trip(x: torch.Tensor, repeat: int, sync) -> dict[str, float]:
    """Seconds per torchao MX / NVFP4 quantize + dequantize of x (its own, eager, path)."""
    try:
        from torchao.prototype.mx_formats.mx_tensor import MXTensor
        from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, per_tensor_amax_to_scale
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
        return {"unavailable": str(exc)[:80]}

    def mx() -> torch.Tensor:
        return MXTensor.to_mx(x, torch.float4_e2m1fn_x2, 32).dequantize(x.dtype)

    def nv() -> torch.Tensor:
        scale = per_tensor_amax_to_scale(x.abs().amax().float())
        return NVFP4Tensor.to_nvfp4(x, per_tensor_scale=scale).dequantize(x.dtype)

    out = {}
    for name, fn in (("mxfp4", mx), ("nvfp4", nv)):
        try:
            out[name] = timed(fn, repeat, sync)
        except Exception as exc:  # noqa: BLE001 - report, do not stop the benchmark
            out[f"{name}_error"] = str(exc)[:80]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=4096, help="tensor is size x size (default 4096)")
    p.add_argument("--formats", default="mxfp4,nvfp4", help=f"comma list from: {','.join(list_formats())}")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--repeat", type=int, default=9, help="timed rounds; each round calls every op once")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backends", default="auto", help="comma list from: auto,native,compiled,eager")
    p.add_argument("--variants", default=",".join(v for v in native.VARIANTS if native.runnable(v)),
                   help="C kernel builds to time (default: every one this CPU runs)")
    p.add_argument("--stat", choices=list(STATS), default="median", help="of the rounds' times (default median)")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args()

    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    results = []
    baselines = []
    print(f"device {args.device}, threads {torch.get_num_threads()}, {args.size}x{args.size}")
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        x = torch.randn(args.size, args.size, device=args.device).to(dtype)
        y = torch.empty_like(x)
        nbytes = x.numel() * x.element_size()
        rows = [(fmt, f"{b}/{v}" if v else b, b, v) for fmt in args.formats.split(",")
                for b, v in kernel_rows(args.backends.split(","), args.variants.split(","))]
        first = {}
        for fmt, label, backend, variant in rows:
            t0 = time.perf_counter()
            on_backend(backend, variant, lambda fmt=fmt: (fake_quantize(x, fmt), fake_quantize(x, fmt, out=y),
                                                  quant_stats(x, fmt)))()
            first[fmt, label] = time.perf_counter() - t0
        ops = {"clone": lambda: x.clone(), "copy": lambda: y.copy_(x)}
        for fmt, label, backend, variant in rows:
            ops[f"{fmt}/{label}/alloc"] = on_backend(backend, variant, lambda fmt=fmt: fake_quantize(x, fmt))
            ops[f"{fmt}/{label}/out"] = on_backend(backend, variant, lambda fmt=fmt: fake_quantize(x, fmt, out=y))
            ops[f"{fmt}/{label}/stats"] = on_backend(backend, variant, lambda fmt=fmt: quant_stats(x, fmt))
        t = timed_in_turns(ops, args.repeat, sync, STATS[args.stat])
        t_clone, t_copy = t["clone"], t["copy"]
        print(f"\n{dtype_name}: clone {t_clone * 1e3:.2f} ms, copy_ {t_copy * 1e3:.2f} ms "
              f"({2 * nbytes / t_copy / 1e9:.1f} GB/s)")
        print(f"{'format':<12} {'backend':<16} {'GB/s':>7} {'alloc/clone':>12} {'out/copy':>9} {'stats/copy':>11}")
        for fmt, label, backend, variant in rows:
            t_alloc, t_out, t_stats = (t[f"{fmt}/{label}/{op}"] for op in ("alloc", "out", "stats"))
            row = {"format": fmt, "dtype": dtype_name, "backend": backend, "variant": variant,
                   "gbps": 2 * nbytes / t_alloc / 1e9,
                   "alloc_over_clone": t_clone / t_alloc, "out_over_copy": t_copy / t_out,
                   "stats_over_copy": t_copy / t_stats, "first_call_s": first[fmt, label],
                   "ms": {"clone": t_clone * 1e3, "copy": t_copy * 1e3, "alloc": t_alloc * 1e3,
                          "out": t_out * 1e3, "stats": t_stats * 1e3}}
            results.append(row)
            print(f"{fmt:<12} {label:<16} {row['gbps']:7.2f} {row['alloc_over_clone']:12.2f} "
                  f"{row['out_over_copy']:9.2f} {row['stats_over_copy']:11.2f}   "
                  f"(first calls incl. build/compile {first[fmt, label]:.1f} s)")
        baselines.append((dtype_name, x, t_clone, t_copy))
    # torchao last: its many large temporaries change what the allocator hands out (recycled or fresh pages)
    for dtype_name, x, t_clone, t_copy in baselines:
        ao = torchao_round_trip(x, min(args.repeat, 3), sync)
        if "unavailable" in ao:
            print(f"\ntorchao: not importable ({ao['unavailable']})")
            break
        for fmt, t in ao.items():
            if isinstance(t, float):
                print(f"torchao {dtype_name:<8} {fmt:<6} round trip {t * 1e3:8.1f} ms: {t_clone / t:.3f} of clone, "
                      f"{t_copy / t:.4f} of copy_")
            else:
                print(f"torchao {dtype_name} {fmt}: {t}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
