"""Nominal against effective noise on a real model, and what `noise.sigma_basis: effective` costs.

    python benchmarks/effective_sigma.py                  # SmolLM2, MXFP4 W4A4, linear weights
    python benchmarks/effective_sigma.py --format nvfp4

For each nominal sigma (relative to each weight's RMS) the noise is written once and the effective
sigma the quantized GEMM sees, std(Q(W0+n) - Q(W0)) / rms(W0), is read per layer (DESIGN.md §3). Then
the effective basis is calibrated (timed) and asked for the schedule's first and last effective sigma.
"""

from __future__ import annotations

import argparse
import statistics
import time

from rin_train.noise import NoiseConfig, NoiseInjector
from srdd.models import load_causal_lm
from srdd.qlinear import LinearQuantConfig, quantize_linears


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2")
    p.add_argument("--format", default="mxfp4")
    p.add_argument("--sigmas", default="0.05,0.005,0.0005", help="nominal sigmas to compare (comma list)")
    args = p.parse_args()
    model, _ = load_causal_lm(args.model)
    quantize_linears(model, LinearQuantConfig(args.format, "w4a4"))
    for sigma in (float(s) for s in args.sigmas.split(",")):
        cfg = NoiseConfig(schedule="constant", sigma_start=sigma, sigma_end=sigma, num_stages=1)
        injector = NoiseInjector(model, cfg, seed=0, effective=True)
        record = injector.perturb(0, 1)
        effective = injector.effective_layers()
        injector.restore()
        ratios = [effective[k] / record["sigma_layers"][k] for k in effective]
        print(f"{args.format} linear weights, nominal {sigma:g}: effective / nominal mean "
              f"{statistics.fmean(ratios):.1f} (layers {min(ratios):.1f}-{max(ratios):.1f})")
    t0 = time.perf_counter()
    cfg = NoiseConfig(schedule="exponential", sigma_start=0.05, sigma_end=0.0005, num_stages=10,
                      sigma_basis="effective")
    injector = NoiseInjector(model, cfg, seed=0)
    print(f"effective basis calibration: {time.perf_counter() - t0:.1f} s for {len(injector.targets)} weights")
    for step in (0, 9):
        record = injector.perturb(step, 10)
        effective = injector.effective_layers()
        injector.restore()
        nominal = statistics.fmean(record["sigma_layers"].values())
        print(f"  step {step}: asked effective {injector.schedules[0].sigma_at(step, 10):.3g}, measured "
              f"{statistics.fmean(effective.values()):.3g}, nominal used {nominal:.3g}")


if __name__ == "__main__":
    main()
