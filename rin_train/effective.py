"""Effective noise: what the quantized GEMM really sees of the noise written into a weight (DESIGN.md §3).

A linear weight under W4 reaches its GEMM as Q(W0 + n), so the noise the model
sees is Q(W0 + n) - Q(W0), not n. Below the quantization step most of n rounds
away and the rest flips whole grid steps: effective and nominal sigma differ by
2-20x, and a 100x schedule decay acts like ~10x. An RMSNorm weight reaches no
GEMM itself; its noise scales the normalized activations the next quantized
linears read, so its effective sigma is measured there: std(Qa(y') - Qa(y)) /
rms(y) for the norm's clean output y and noisy output y' on the first rollout
batch of each noise version.

Both are relative to the clean tensor's RMS, as the nominal sigma is, so the two
read on one scale: nominal = std(n) / rms(W0), effective = std(Q(W0+n) - Q(W0)) / rms(W0).

`noise.sigma_basis: effective` inverts the relation: effective sigma is measured
on a log grid of nominal sigmas (one fixed draw each) and interpolated in log-log
space to find the nominal sigma that yields a requested effective one. For a
linear target the curve depends on the weight alone, so `EffectiveBasis` measures
it once when the run starts; for an RMSNorm target it depends on the activations
the norm scales, so `rmsnorm_nominal` measures it on the first rollout batch of each
noise version, with that version's draw.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from srdd.formats import fake_quantize
from srdd.qlinear import QuantLinear

GRID = np.logspace(-5, 0, 26)
"""Nominal sigmas (relative to the weight RMS) at which EffectiveBasis measures the effective sigma."""


def relative_std(delta: torch.Tensor, rms: float) -> float:
    """std(delta) / rms (0 for a one-element tensor or a zero reference). torch accumulates an fp32 std in
    float64 on the CPU, so no float64 copy of a weight-sized tensor is made."""
    if delta.numel() < 2 or rms == 0:
        return 0.0
    return float(delta.to(torch.float32).std()) / rms


def on_device(master: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """The master where its parameter lives: itself when it is already there, else a copy (non-blocking from
    pinned memory), so no operation ever mixes the two devices."""
    return master.to(param.device, non_blocking=True)


def weight_rms(weight: torch.Tensor) -> float:
    """rms of a weight as its fp32 master holds it, computed where the weight lives (never on a host copy)."""
    return float(weight.detach().to(torch.float32).pow(2).mean().sqrt())


def gemm_weight_view(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """w -> what the module's GEMM multiplies by for weight w: Q(w) under W4, w itself otherwise."""
    if not isinstance(module, QuantLinear) or not module.quant_enabled or not module.quant.mode.weights:
        return lambda w: w
    fmt, options = module.quant.format, module.quant.options
    return lambda w: fake_quantize(w, fmt, **options)


def served_relative_std(module: QuantLinear, clean: torch.Tensor, scratch: torch.Tensor, rms: float) -> float:
    """relative_std(Q(served) - Q(clean)) of a frozen linear serving a noisy weight and quantizing weights: the
    measure gemm_weight_view gives, with Q(served) read from the buffer `serve` filled instead of quantizing the
    noisy weight again, and Q(clean) and the difference written into `scratch` (fp32, the weight's shape: the
    spent noise draw) instead of new tensors. The same values in the same reduction, so the same float; a noise
    write quantizes each weight once instead of three times."""
    served = module.served_quantized()
    if served is None:
        raise RuntimeError("served_relative_std: the layer serves no quantized weight")
    fmt, options = module.quant.format, module.quant.options
    clean_q = fake_quantize(clean, fmt, **options, out=scratch if clean.dtype == torch.float32 else None)
    return relative_std(torch.sub(served.to(torch.float32), clean_q.to(torch.float32), out=scratch), rms)


def activation_quantizer(layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The input quantizer of the layer's quantized linears (they share one config), or None without A4."""
    for module in layer.modules():
        if isinstance(module, QuantLinear) and module.quant_enabled and module.quant.mode.activations:
            fmt, options = module.quant.format, module.quant.options
            return lambda x: fake_quantize(x, fmt, **options)
    return None


def rmsnorm_output(weight: torch.Tensor, hidden: torch.Tensor, eps: float) -> torch.Tensor:
    """HF Llama/Qwen2 RMSNorm: weight * (x / rms(x)) with the normalization in fp32, cast back to x's dtype."""
    normed = hidden.to(torch.float32)
    normed = normed * torch.rsqrt(normed.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(hidden.dtype)


def norm_eps(module: nn.Module) -> float:
    for name in ("variance_epsilon", "eps"):
        value = getattr(module, name, None)
        if isinstance(value, float):
            return value
    raise TypeError(f"{type(module).__name__} has no variance_epsilon/eps: not an RMSNorm srdd can measure")


def rmsnorm_effective(module: nn.Module, clean: torch.Tensor, hidden: torch.Tensor, output: torch.Tensor,
                      quantizer: Callable[[torch.Tensor], torch.Tensor] | None) -> float:
    """std(Qa(y') - Qa(y)) / rms(y): y' the norm's (noisy) output, y the clean weight's on the same input."""
    with torch.no_grad():
        weight = module.weight.detach()
        reference = rmsnorm_output(clean.to(weight.dtype), hidden, norm_eps(module))
        rms = float(reference.double().pow(2).mean().sqrt())
        if quantizer is not None:
            output, reference = quantizer(output), quantizer(reference)
        return relative_std(output.to(torch.float32) - reference.to(torch.float32), rms)


CALIBRATION_TOKENS = 4096
"""Tokens of the first rollout batch an RMSNorm target is calibrated on (bounds its cost per version)."""

BISECTIONS = 8
"""Bisections of the grid interval where an RMSNorm target's effective sigma crosses the one asked for: its
curve is measured on the very batch and draw it serves, so it can be solved on the raw, jagged values rather
than interpolated (8 halvings of a log-interval of 1.58x leave 0.2 %)."""

Curve = tuple[np.ndarray, np.ndarray]
"""(nominal sigmas ascending, effective sigmas made non-decreasing)."""


def monotone_curve(nominal, effective) -> Curve:
    """The measured points sorted by nominal sigma, effective made non-decreasing: rounding makes tiny wiggles
    in effective(nominal) that would break interpolation."""
    order = np.argsort(np.asarray(nominal, dtype=np.float64), kind="stable")
    return (np.asarray(nominal, dtype=np.float64)[order],
            np.maximum.accumulate(np.asarray(effective, dtype=np.float64)[order]))


def nominal_for(curve: Curve, effective: float) -> float:
    """The nominal sigma whose effective sigma is `effective` on `curve` (log-log interpolation; beyond the
    measured points, proportional to the nearest)."""
    if effective <= 0:
        return 0.0
    nominal, eff = curve
    positive = eff > 0
    if not positive.any():
        return float(nominal[-1])
    nominal, eff = nominal[positive], eff[positive]
    if effective <= eff[0]:
        return float(nominal[0] * effective / eff[0])
    if effective >= eff[-1]:
        return float(nominal[-1] * effective / eff[-1])
    return float(math.exp(np.interp(math.log(effective), np.log(eff), np.log(nominal))))


def rmsnorm_nominal(module: nn.Module, clean: torch.Tensor, unit: torch.Tensor, rms: float, hidden: torch.Tensor,
                    quantizer: Callable[[torch.Tensor], torch.Tensor] | None, effective: float) -> float:
    """The nominal sigma s for which the RMSNorm weight clean + unit * s * rms gives `effective` on (at most
    CALIBRATION_TOKENS tokens of) the norm's input `hidden`, where effective(s) = std(Qa(y_s) - Qa(y)) / rms(y).

    Cost per call: len(GRID) + BISECTIONS norm outputs and activation fake-quantizations of those tokens.
    """
    quantize = quantizer or (lambda x: x)
    with torch.no_grad():
        hidden = hidden.reshape(-1, hidden.shape[-1])[:CALIBRATION_TOKENS]
        dtype, eps = module.weight.dtype, norm_eps(module)
        reference = rmsnorm_output(clean.to(dtype), hidden, eps)
        scale = float(reference.double().pow(2).mean().sqrt())
        seen_clean = quantize(reference).to(torch.float32)

        def measure(s: float) -> float:
            noisy = rmsnorm_output((clean + unit * float(s * rms)).to(dtype), hidden, eps)
            return relative_std(quantize(noisy).to(torch.float32) - seen_clean, scale)

        def miss(value: float) -> float:
            return abs(math.log(max(value, 1e-30) / effective))

        measured = [measure(s) for s in GRID]
        crossing = next((k for k in range(len(GRID) - 1) if measured[k] <= effective <= measured[k + 1]), None)
        if crossing is None:  # below the floor or above the grid: proportional to the nearest point
            return nominal_for(monotone_curve(GRID, measured), effective)
        low, high = GRID[crossing], GRID[crossing + 1]
        best = min(((low, measured[crossing]), (high, measured[crossing + 1])), key=lambda p: miss(p[1]))
        for _ in range(BISECTIONS):
            middle = math.sqrt(low * high)
            value = measure(middle)
            best = min(best, (middle, value), key=lambda p: miss(p[1]))
            low, high = (middle, high) if value <= effective else (low, middle)
    return float(best[0])


class EffectiveBasis:
    """Nominal sigma per linear target for a requested effective sigma (`noise.sigma_basis: effective`).

    Cost: len(GRID) = 26 noise draws and fake-quantizations of every targeted linear weight, on the weight's
    device, when the run starts (seconds for a 135M model, a few minutes for 7B on a CPU, seconds on a GPU)
    and again only for weights that change (`measure`); nothing per step.
    """

    def __init__(self, targets: list, views: list[Callable[[torch.Tensor], torch.Tensor]], seeds: list[int]) -> None:
        """`views[i]`: what target i's GEMM multiplies by for a weight w (`gemm_weight_view` of its module);
        `seeds[i]`: the seed of target i's noise stream (replicas of one tensor share it, so their curves agree).
        Only linear targets get a curve: an RMSNorm target's is measured per noise version (`rmsnorm_nominal`)."""
        self.targets, self.views, self.seeds = targets, views, seeds
        self.curves: dict[int, Curve] = {}
        self.measure(range(len(targets)))

    def measure(self, indices) -> None:
        """(Re)measure the curves of the linear targets among `indices` from their current masters, each master
        copied to its weight's device for the time of its own measurement."""
        for index in indices:
            t, view = self.targets[index], self.views[index]
            if t.kind != "linear":
                continue
            device, clean = t.param.device, on_device(t.clean, t.param)
            clean_view = view(clean.to(t.param.dtype)).to(torch.float32)
            generator = torch.Generator(device).manual_seed(self.seeds[index] * 7919 + index)
            unit = torch.randn(t.param.shape, generator=generator, dtype=torch.float32, device=device)
            effective = []
            for sigma in GRID:
                noisy = (clean + unit * float(sigma * t.rms)).to(t.param.dtype)
                effective.append(relative_std(view(noisy).to(torch.float32) - clean_view, t.rms))
            self.curves[index] = monotone_curve(GRID, effective)

    def floor(self, index: int) -> float:
        """The effective sigma of target `index` at the grid's smallest nominal sigma (1e-5 of its RMS).

        It need not approach 0: weights sitting exactly on a rounding tie (common in weights converted from
        an already quantized file) flip under any noise at all, so below this floor no nominal sigma
        delivers the effective sigma asked for.
        """
        return float(self.curves[index][1][0])

    def nominal(self, index: int, effective: float) -> float:
        """The nominal sigma whose effective sigma is `effective` for target `index`."""
        return nominal_for(self.curves[index], effective)
