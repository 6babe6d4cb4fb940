"""Noise injection on RMSNorm and/or linear weights, restore-then-perturb, never accumulating.

Every targeted weight keeps an fp32 master copy of its clean value, except a frozen
quantized linear's (the TRL policy's base weights under LoRA): its noisy value goes to the
layer's quantized-weight buffer (QuantLinear.serve), so its parameter stays clean and is its
own master, and the weights are held twice (parameter, quantized buffer), not three times. `perturb`
first writes the clean weights back, then adds fresh N(0, sigma^2) noise drawn
in fp32 (sigma = schedule x layer multiplier x, in relative mode, the clean
tensor's RMS), and reads back the noise actually present after the write into
the parameter's dtype: bf16 rounds small noise away near 1.0, and the logged
per-layer "achieved" sigma shows it instead of hiding it (DESIGN.md lessons 1-3).

Each target draws from its own generator, seeded from (its stream's seed, step,
target index), so draws can run in parallel threads (torch.randn is single-threaded
and releases the GIL) while the noise stays a function of the seed and step
alone, whatever the number of workers.

Every tensor operation runs on the parameter's device: the noise is drawn there
(a CPU parameter draws from torch's CPU generator, a CUDA one from a CUDA
generator: the same seed gives other values on the two), and a master kept
elsewhere (the verl rollout's, in pinned CPU memory) is only ever copied to the
parameter's device, one target at a time, never computed on where it lives.
"""

from __future__ import annotations

import enum
import math
import re
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn

from rin_train.effective import (EffectiveBasis, activation_quantizer, gemm_weight_view, norm_eps,
                                 on_device, relative_std, rmsnorm_nominal, rmsnorm_effective, rmsnorm_output,
                                 served_relative_std, weight_rms)
from rin_train.schedule import Schedule, SigmaSchedule
from srdd.errors import SrddError
from srdd.qlinear import QuantLinear
from srdd.yamlio import load_yaml
from srdd.models import decoder_layers

TARGET_KINDS = ("rmsnorm", "linear")
MAX_RELATIVE_SIGMA = 1.0
MAX_ABSOLUTE_SIGMA_OVER_RMS = 0.5


class SigmaBasis(str, enum.Enum):
    """Which noise the schedule's sigma values describe (DESIGN.md §3 "Noise as the model sees it")."""

    NOMINAL = "nominal"
    """std of the noise written into the weight (what QeRL and the published study specify)."""
    EFFECTIVE = "effective"
    """std of the noise the quantized GEMM sees, Q(W0+n) - Q(W0) (for an RMSNorm weight, on the quantized
    activations it feeds): the nominal sigma is found by a calibration, once when the run starts for a
    linear weight (rin_train.effective.EffectiveBasis), on the first rollout batch of every noise version
    for an RMSNorm weight (rin_train.effective.rmsnorm_nominal)."""


class SigmaMode(str, enum.Enum):
    RELATIVE = "relative"
    """sigma is a fraction of each tensor's RMS: 0.05 means 5 % of the weight scale."""
    ABSOLUTE = "absolute"
    """sigma is in weight units, as QeRL's AQN on RMSNorm weights (~1.0 in scale)."""


@dataclass(frozen=True)
class ZoneOverride:
    name: str
    layers: list[int]
    sigma_start: float
    sigma_end: float


@dataclass(frozen=True)
class NoiseConfig:
    enabled: bool = True
    targets: list[str] = field(default_factory=lambda: ["linear"])
    schedule: str = "exponential"
    sigma_start: float = 0.05
    sigma_end: float = 0.0005
    num_stages: int = 10
    warmup_stage: bool = False
    sigma_mode: str = "relative"
    sigma_basis: str = "nominal"
    target_layers: list[int] | None = None
    exclude_patterns: list[str] = field(default_factory=list)
    layer_multipliers: dict[int, float] | None = None
    multipliers_file: str | None = None
    zone_overrides: list = field(default_factory=list)

    def __post_init__(self) -> None:
        bad = sorted(set(self.targets) - set(TARGET_KINDS))
        if bad or not self.targets:
            raise SrddError(f"noise.targets: unknown {bad}; choose from {list(TARGET_KINDS)}")
        try:
            object.__setattr__(self, "sigma_mode", SigmaMode(self.sigma_mode))
        except ValueError:
            raise SrddError(f"noise.sigma_mode must be 'relative' or 'absolute', got {self.sigma_mode!r}") from None
        try:
            object.__setattr__(self, "sigma_basis", SigmaBasis(self.sigma_basis))
        except ValueError:
            raise SrddError(f"noise.sigma_basis must be 'nominal' or 'effective', got {self.sigma_basis!r}") from None
        if self.sigma_basis is SigmaBasis.EFFECTIVE and self.sigma_mode is not SigmaMode.RELATIVE:
            raise SrddError("noise.sigma_basis: effective needs sigma_mode relative: effective sigma is "
                            "relative to the clean tensor's RMS, so an absolute schedule has no effective reading")
        self.schedule_for(None)  # validates sigma values, stages and decay direction
        if self.sigma_mode is SigmaMode.RELATIVE and self.sigma_start > MAX_RELATIVE_SIGMA:
            raise SrddError(f"noise.sigma_start {self.sigma_start} relative to the weight RMS would bury the "
                            f"weights (max {MAX_RELATIVE_SIGMA})")
        for pattern in self.exclude_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise SrddError(f"noise.exclude_patterns: bad regex {pattern!r}: {exc}") from None
        if self.layer_multipliers is not None and self.multipliers_file is not None:
            raise SrddError("noise: give layer_multipliers or multipliers_file, not both")
        if self.multipliers_file is not None:
            object.__setattr__(self, "layer_multipliers", load_multipliers(Path(self.multipliers_file)))
        if self.layer_multipliers is not None:
            object.__setattr__(self, "layer_multipliers", _check_multipliers(self.layer_multipliers))
        zones = []
        for i, z in enumerate(self.zone_overrides):
            if isinstance(z, ZoneOverride):
                zones.append(z)
                continue
            if not isinstance(z, dict) or set(z) != {"name", "layers", "sigma_start", "sigma_end"}:
                raise SrddError(f"noise.zone_overrides[{i}]: needs exactly name, layers, sigma_start, sigma_end")
            zones.append(ZoneOverride(**z))
        object.__setattr__(self, "zone_overrides", zones)
        for z in zones:
            self.schedule_for(z)
        self._check_peak_sigma()

    def _check_peak_sigma(self) -> None:
        """The cap holds for what a layer really gets: its (zone's) sigma_start times its multiplier
        (a multiplier of 1e308 passed alone, and the run died mid-way of an infinite sigma)."""
        starts = {layer: z.sigma_start for z in self.zone_overrides for layer in z.layers}
        layers = set(starts) | set(self.layer_multipliers or {})
        for layer in sorted(layers):
            peak = starts.get(layer, self.sigma_start) * (self.layer_multipliers or {}).get(layer, 1.0)
            if not math.isfinite(peak):
                raise SrddError(f"noise: layer {layer} would get sigma {peak:g} (sigma_start x its multiplier)")
            if self.sigma_mode is SigmaMode.RELATIVE and peak > MAX_RELATIVE_SIGMA:
                raise SrddError(f"noise: layer {layer} would get sigma {peak:g} (sigma_start x its multiplier); "
                                f"relative to the weight RMS that would bury the weights (max {MAX_RELATIVE_SIGMA})")

    def schedule_for(self, zone: ZoneOverride | None) -> SigmaSchedule:
        start, end = (zone.sigma_start, zone.sigma_end) if zone else (self.sigma_start, self.sigma_end)
        return SigmaSchedule(Schedule(self.schedule) if self.schedule in [s.value for s in Schedule] else self.schedule,
                             start, end, self.num_stages, self.warmup_stage)

    def to_dict(self) -> dict:
        return {"enabled": self.enabled, "targets": list(self.targets), "schedule": self.schedule,
                "sigma_start": self.sigma_start, "sigma_end": self.sigma_end, "num_stages": self.num_stages,
                "warmup_stage": self.warmup_stage, "sigma_mode": self.sigma_mode.value,
                "sigma_basis": self.sigma_basis.value,
                "target_layers": self.target_layers, "exclude_patterns": list(self.exclude_patterns),
                "layer_multipliers": self.layer_multipliers, "multipliers_file": self.multipliers_file,
                "zone_overrides": [vars(z) for z in self.zone_overrides]}


def _check_multipliers(raw) -> dict[int, float]:
    if not isinstance(raw, dict):
        raise SrddError("noise.layer_multipliers must be a mapping {layer: multiplier}")
    out = {}
    for k, v in raw.items():
        try:
            layer = int(k)
        except (TypeError, ValueError):
            raise SrddError(f"noise.layer_multipliers: layer {k!r} is not an integer") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise SrddError(f"noise.layer_multipliers[{layer}] must be a finite number >= 0, got {v!r}")
        out[layer] = float(v)
    return out


def load_multipliers(path: Path) -> dict[int, float]:
    if not path.is_file():
        raise SrddError(f"noise.multipliers_file {path} does not exist")
    try:
        doc = load_yaml(path.read_text(encoding="utf-8"), f"noise.multipliers_file {path}")
    except UnicodeDecodeError:
        raise SrddError(f"noise.multipliers_file {path} is not UTF-8 text") from None
    if not isinstance(doc, dict) or doc.get("schema") != "srdd.noise/v1":
        raise SrddError(f"noise.multipliers_file {path} is not a srdd.noise/v1 file (make one with srdd calibrate)")
    return _check_multipliers(doc.get("layer_multipliers"))


@dataclass
class Target:
    name: str
    layer: int
    kind: str
    module: nn.Module
    param: nn.Parameter
    clean: torch.Tensor
    """The clean weight: the parameter itself when `served`, else an fp32 master copy (on the parameter's
    device, or wherever master_of keeps it)."""
    rms: float
    stream: int = 0
    """Which noise stream the target draws from: targets that hold the same tensor in several processes
    (tensor-parallel replicas) must share it; see NoiseInjector.stream_seed."""
    served: bool = False
    """The noisy weight goes to the module's quantized-weight buffer (QuantLinear.serve), never into the
    parameter, which therefore stays clean and is its own master."""


def _servable(module: nn.Module, weight: torch.Tensor) -> bool:
    """A frozen weight of a quantized linear: its noise can live in the layer's quantized-weight buffer."""
    return isinstance(module, QuantLinear) and module.weight is weight and module.servable


def _is_rmsnorm(module: nn.Module) -> bool:
    return "rmsnorm" in type(module).__name__.lower() and isinstance(getattr(module, "weight", None), torch.Tensor)


def _is_linear(name: str, module: nn.Module) -> bool:
    """torch's nn.Linear (HF, PEFT's base_layer) or vLLM's LinearBase (its own 2-D `weight` parameter applied
    through a `quant_method`: the rollout copy under verl; vLLM's LoRA wrappers only forward to it); never a
    LoRA adapter."""
    own = module._parameters.get("weight")
    vllm_linear = hasattr(module, "quant_method") and own is not None and own.ndim == 2
    return (isinstance(module, nn.Linear) or vllm_linear) and not re.search(r"(^|\.)lora_[AB](\.|$)", name)


def _by_layer(values: dict[int, list[float]]) -> dict[str, float]:
    """{"layer": mean of its targets' values}, layers in order (metrics.jsonl's per-layer sigma maps)."""
    return {str(k): sum(v) / len(v) for k, v in sorted(values.items())}


def noise_seed(seed: int, step: int, index: int) -> int:
    """The generator seed of target `index` at `step`: a fixed function of the three, never of thread timing.

    32 bits, all that torch's CPU generator (mt19937) keeps of a seed; within one run's seed they differ
    for every target (index < 1_000_033) and step below 4294.
    """
    return ((seed * 1_000_003 + step) * 1_000_033 + index) % 2**32


WINDOW_VALUES = 1 << 24
"""Noise values drawn per window beyond one job per worker (64 MB of fp32): enough jobs for the pool to
balance tensors of mixed sizes, few enough that the drawn noise stays small next to the weights."""


def windows(sizes: list[int], workers: int, budget: int) -> Iterator[range]:
    """Consecutive index ranges over `sizes`: at least `workers` items each, more while within `budget`."""
    start = 0
    while start < len(sizes):
        end, total = start, 0
        while end < len(sizes) and (end - start < workers or total + sizes[end] <= budget):
            total += sizes[end]
            end += 1
        yield range(start, end)
        start = end


def drawn_in_windows(jobs: list[Callable[[], torch.Tensor]], sizes: list[int], workers: int) -> Iterator[torch.Tensor]:
    """Results of `jobs` (each making a tensor of `sizes[i]` values) in order, drawn by `workers` threads.

    A window of jobs finishes before its results are handed out, so the caller's own
    multi-threaded torch ops never compete with the draws for the cores (oversubscribed
    OpenMP barriers stall badly), and only one window's results are alive at once.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for window in windows(sizes, workers, WINDOW_VALUES):
            pending = deque(pool.submit(jobs[i]) for i in window)
            wait(pending)
            while pending:
                yield pending.popleft().result()


class NoiseInjector:
    def __init__(self, model: nn.Module, cfg: NoiseConfig, *, seed: int = 0, workers: int | None = None,
                 effective: bool = False) -> None:
        """`workers`: threads drawing noise (default torch.get_num_threads()); the noise does not depend on it.
        `effective`: also measure the effective sigma per layer (rin_train.effective) on every perturbation,
        through the quantizers `gemm_view` and `norm_quantizer` find (srdd.qlinear's here; a rollout copy whose
        layers are quantized another way overrides them)."""
        self.cfg = cfg
        self.seed = seed
        self.workers = max(1, workers or torch.get_num_threads())
        layers = decoder_layers(model)
        self.num_layers = len(layers)
        wanted = set(range(self.num_layers)) if cfg.target_layers is None else set(cfg.target_layers)
        referenced = set(wanted) | set(cfg.layer_multipliers or {}) | {l for z in cfg.zone_overrides for l in z.layers}
        missing = sorted(l for l in referenced if not 0 <= l < self.num_layers)
        if missing:
            raise SrddError(f"noise settings name layers {missing}, but the model has layers 0..{self.num_layers - 1}")
        excludes = [re.compile(p) for p in cfg.exclude_patterns]
        self.targets: list[Target] = []
        for index, layer in enumerate(layers):
            if index not in wanted:
                continue
            for name, module in layer.named_modules():
                kind = ("rmsnorm" if _is_rmsnorm(module) else "linear" if _is_linear(name, module) else None)
                if kind not in cfg.targets:
                    continue
                for full, weight, stream in self.weights_of(f"layers.{index}.{name}", module):
                    if any(p.search(full) for p in excludes):
                        continue
                    served = _servable(module, weight)
                    clean = weight.detach() if served else self.master_of(weight)
                    self.targets.append(Target(full, index, kind, module, weight, clean, weight_rms(weight), stream,
                                               served))
        if not self.targets:
            raise SrddError(f"noise targets {cfg.targets} match no weight in the selected layers")
        self.schedules = {i: cfg.schedule_for(None) for i in range(self.num_layers)}
        for z in cfg.zone_overrides:
            for layer in z.layers:
                self.schedules[layer] = cfg.schedule_for(z)
        self._check_absolute_sigma()
        self.perturbed = False
        self.effective = effective or cfg.sigma_basis is SigmaBasis.EFFECTIVE
        self._weight_views = [self.gemm_view(t.module) for t in self.targets]
        self._activation_views = {i: self.norm_quantizer(layers[t.layer]) for i, t in enumerate(self.targets)
                                  if t.kind == "rmsnorm" and self.norm_measurable}
        self._nominal: dict[int, float] = {}
        self._effective: dict[int, float] = {}
        self._pending: dict[int, tuple[torch.Tensor, float]] = {}
        """RMSNorm target -> (this version's unit draw, requested effective sigma), until its first forward."""
        self._hooks: list = []
        self.basis = (EffectiveBasis(self.targets, self._weight_views,
                                     [self.stream_seed(t.stream) for t in self.targets])
                      if cfg.sigma_basis is SigmaBasis.EFFECTIVE else None)
        if self.basis is not None:
            if not self.norm_measurable and any(t.kind == "rmsnorm" for t in self.targets):
                raise SrddError("noise.sigma_basis: effective on RMSNorm targets needs the norm's activations, "
                                "which this rollout cannot read: use sigma_basis nominal or linear targets")
            self._warn_below_floor()

    norm_measurable = True
    """Whether an RMSNorm target's effective sigma can be read by a forward hook on the norm (HF norms can)."""

    def gemm_view(self, module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """w -> what `module`'s GEMM multiplies by for weight w (the effective sigma is measured through it)."""
        return gemm_weight_view(module)

    def norm_quantizer(self, layer: nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The input quantizer of the linears a layer's norms feed, or None without A4."""
        return activation_quantizer(layer)

    def _warn_below_floor(self) -> None:
        """Say once, with numbers, when the schedule asks for less effective noise than any noise gives."""
        positive = [x for s in self.schedules.values() for x in s.stage_sigmas() if x > 0]
        multipliers = [m for m in (self.multiplier(t.layer) for t in self.targets) if m > 0]
        if not positive or not multipliers:
            return
        lowest = min(positive) * min(multipliers)
        floors = [self.basis.floor(i) for i in self.basis.curves]
        if not floors:
            return
        above = sum(f > lowest for f in floors)
        if above:
            print(f"noise.sigma_basis effective: the schedule reaches an effective sigma of {lowest:.3g}, but on "
                  f"{above} of {len(floors)} targeted weights even 1e-5 nominal noise gives more (up to "
                  f"{max(floors):.3g}: weights on rounding ties flip under any noise); there the schedule's tail "
                  "cannot be honoured and sigma_layers_effective shows what was", file=sys.stderr, flush=True)

    def weights_of(self, name: str, module: nn.Module) -> list[tuple[str, torch.Tensor, int]]:
        """The tensors of `module` perturbed as separate targets, each with the name exclude_patterns see and
        its noise stream: its weight, stream 0. (The verl rollout splits vLLM's fused weights into the matrices
        they pack, and gives tensor-parallel shards their own streams.)"""
        return [(name, module.weight, 0)]

    def stream_seed(self, stream: int) -> int:
        """The seed of noise stream `stream`: the run's seed (one process holds every tensor once)."""
        return self.seed

    def master_of(self, weight: torch.Tensor) -> torch.Tensor:
        """The fp32 clean copy of `weight`, on its device (the verl rollout keeps them in pinned CPU memory)."""
        return weight.detach().to(torch.float32).clone()

    def refresh(self) -> list[int] | None:
        """After the weights were rewritten in place (a weight sync): re-read the master of every target whose
        weight no longer equals it, re-measure those targets' effective-sigma curves, and return their indices.
        Targets whose weights are unchanged (the base weights under LoRA) keep master and curve. None when a
        target's tensor is no longer its module's weight (reallocated): then only a new injector is right.

        Call it on clean weights (restore() before the write). Compared on the parameter's device, one
        target at a time.
        """
        self._remove_hooks()
        if any(t.param.untyped_storage().data_ptr() != t.module.weight.untyped_storage().data_ptr()
               for t in self.targets):
            return None
        changed = []
        with torch.no_grad():
            for index, t in enumerate(self.targets):
                if torch.equal(t.param.detach().to(torch.float32), on_device(t.clean, t.param)):
                    continue
                t.clean, t.rms = self.master_of(t.param), weight_rms(t.param)
                changed.append(index)
        self.perturbed = False
        self._check_absolute_sigma()
        if self.basis is not None:
            self.basis.measure(changed)
        return changed

    def _check_absolute_sigma(self) -> None:
        if self.cfg.sigma_mode is not SigmaMode.ABSOLUTE:
            return
        for t in self.targets:
            top = max(s.sigma_start for s in self.schedules.values()) * self.multiplier(t.layer)
            if t.kind == "linear" and top > MAX_ABSOLUTE_SIGMA_OVER_RMS * t.rms:
                raise SrddError(f"absolute sigma {top:g} on {t.name} (RMS {t.rms:.3g}) would destroy the weight; "
                                f"use sigma_mode: relative or sigma <= {MAX_ABSOLUTE_SIGMA_OVER_RMS} x RMS")

    def multiplier(self, layer: int) -> float:
        return (self.cfg.layer_multipliers or {}).get(layer, 1.0)

    def restore(self) -> None:
        """Write the clean weights back (nothing to do when no noise is on)."""
        self._remove_hooks()
        if not self.perturbed:
            return
        with torch.no_grad():
            for t in self.targets:
                if t.served:
                    t.module.stop_serving()
                else:
                    t.param.copy_(t.clean)
        self.perturbed = False

    def perturb(self, step: int, total_steps: int) -> dict:
        """Set every target to clean master + this step's noise; returns the scheduled and achieved sigmas.

        Each weight is written from its fp32 master, never from its current (possibly perturbed)
        value, so noise cannot accumulate across steps (lesson 3) and no separate restore is needed.
        The noise buffer is scaled, offset by the master and written in place, then reused for the
        achieved delta read back from the parameter: no further weight-sized temporaries. A served
        target (a frozen quantized linear) gets the noisy value in its quantized-weight buffer instead,
        cast to the parameter's dtype exactly as a write into the parameter would round it.
        """
        self.perturbed = True  # from the first write on, restore() has something to undo
        self._remove_hooks()
        self._nominal, self._effective, self._pending = {}, {}, {}
        with torch.no_grad():
            for index, (t, noise) in enumerate(zip(self.targets, self._draws(step))):
                sigma = self.schedules[t.layer].sigma_at(step, total_steps) * self.multiplier(t.layer)
                if self.basis is not None and t.kind == "linear":
                    sigma = self.basis.nominal(index, sigma)
                elif self.basis is not None:  # written as asked for now, rescaled on the norm's first forward
                    self._pending[index] = (noise.clone(), sigma)
                scale = t.rms if self.cfg.sigma_mode is SigmaMode.RELATIVE else 1.0
                clean = on_device(t.clean, t.param)
                noise.mul_(sigma * scale).add_(clean)
                # a layer that quantizes its served weight keeps Q(noisy), not `noisy`: the draw is free once served
                holds_q = t.served and t.module.quant.mode.weights
                # delta: what the parameter's dtype kept of the noise, written into the draw once it is free
                if t.served:
                    noisy = noise.to(t.param.dtype)
                    t.module.serve(noisy)
                    delta = torch.sub(noisy.to(torch.float32), clean.to(torch.float32), out=noise if holds_q else None)
                else:
                    t.param.copy_(noise)
                    noisy = t.param.detach()
                    delta = torch.sub(noisy, clean, out=noise)
                self._nominal[index] = float(delta.std()) / scale if delta.numel() > 1 else 0.0
                if self.effective and t.kind == "linear" and holds_q:
                    self._effective[index] = served_relative_std(t.module, clean.to(t.param.dtype), noise, t.rms)
                elif self.effective and t.kind == "linear":
                    view = self._weight_views[index]
                    self._effective[index] = relative_std(view(noisy).float()
                                                          - view(clean.to(t.param.dtype)).float(), t.rms)
        if self.effective:
            self._arm_norm_hooks()
        return {"sigma": self.schedules[0].sigma_at(step, total_steps) if self.num_layers else None,
                "sigma_layers": self.nominal_layers()}

    def nominal_layers(self) -> dict[str, float] | None:
        """Mean nominal sigma per layer of the current perturbation: the std of the noise written, read back.

        Under `sigma_basis: effective` an RMSNorm target's noise is rescaled on its first forward, so read
        this after the rollout (perturb's record holds the values as first written).
        """
        return self._by_layer_of(self._nominal)

    def effective_layers(self) -> dict[str, float] | None:
        """Mean effective sigma per layer of the current perturbation (None unless measured).

        Linear targets are measured when the noise is written; RMSNorm targets on the first
        forward after it (a layer whose norm has not run yet reports its linears alone).
        """
        return self._by_layer_of(self._effective) if self.effective else None

    def _by_layer_of(self, per_target: dict[int, float]) -> dict[str, float] | None:
        if not per_target:
            return None
        values: dict[int, list[float]] = {}
        for index, value in per_target.items():
            values.setdefault(self.targets[index].layer, []).append(value)
        return _by_layer(values)

    def _arm_norm_hooks(self) -> None:
        for index, quantizer in self._activation_views.items():
            measure = partial(self._measure_norm, index, quantizer)
            self._hooks.append(self.targets[index].module.register_forward_hook(measure))

    def _measure_norm(self, index: int, quantizer, module: nn.Module, args: tuple,
                      output: torch.Tensor) -> torch.Tensor | None:
        """On the first forward of this noise version only: under `sigma_basis: effective`, rescale the
        target's draw to the nominal sigma that gives the requested effective one on this batch (and return
        the norm's output recomputed with it); then measure the effective sigma the forward produced."""
        if index in self._effective:
            return None
        t, hidden = self.targets[index], args[0]
        replaced = None
        clean = on_device(t.clean, t.param)
        if index in self._pending:
            unit, requested = self._pending.pop(index)
            nominal = rmsnorm_nominal(module, clean, unit, t.rms, hidden, quantizer, requested)
            with torch.no_grad():
                t.param.copy_(clean + unit * (nominal * t.rms))
                self._nominal[index] = relative_std(t.param.detach() - clean, t.rms)
                output = replaced = rmsnorm_output(t.param.detach(), hidden, norm_eps(module))
        self._effective[index] = rmsnorm_effective(module, clean, hidden, output, quantizer)
        return replaced

    def _remove_hooks(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks = []

    def _draw(self, step: int, index: int) -> torch.Tensor:
        """Unit-variance fp32 noise for target `index` at `step`, on its parameter's device."""
        t = self.targets[index]
        generator = torch.Generator(t.param.device).manual_seed(noise_seed(self.stream_seed(t.stream), step, index))
        return torch.randn(t.param.shape, generator=generator, dtype=torch.float32, device=t.param.device)

    def _draws(self, step: int) -> Iterator[torch.Tensor]:
        """Every target's draw in order: by `workers` threads when all of them are CPU tensors, else in this
        thread (a GPU draws a weight's values in microseconds; threads would only interleave the launches)."""
        jobs = [partial(self._draw, step, index) for index in range(len(self.targets))]
        if any(t.param.device.type != "cpu" for t in self.targets):
            return (job() for job in jobs)
        return drawn_in_windows(jobs, [t.param.numel() for t in self.targets], self.workers)

    @contextmanager
    def applied(self, step: int, total_steps: int) -> Iterator[dict]:
        record = self.perturb(step, total_steps)
        try:
            yield record
        finally:
            self.restore()
