"""What the verl plugin installs on models, written against the model objects only (no verl import).

`rin_train.verl.plugin` calls these from inside verl's processes; keeping them
free of verl and vLLM imports lets the tests run them on CPU on the same model
layouts verl holds:

- `install_on_actor`: the actor's policy as verl's FSDP engine holds it right
  before `_build_fsdp_module` wraps it (a PEFT-wrapped `AutoModelForCausalLM`, or
  the plain one when lora_rank=0) gets srdd.qlinear's W4A4 fake quantization with
  STE, exactly as the TRL engine's policy does: every plain linear except
  `quant.exclude`, PEFT's base_layer included, LoRA adapters full precision.
- `install_on_rollout`: vLLM's linear layers (`LinearBase`: a 2-D `weight`
  applied through `quant_method.apply(layer, x, bias)`, the call vLLM's LoRA
  wrappers also make for the base layer) compute q(x) q(W)^T + b instead of
  their unquantized GEMM. vLLM fuses q/k/v and gate/up: each packed matrix is
  quantized on its own (the actor's bits), and an exclude pattern may not split a
  fused module.
- `RolloutNoise`: QeRL's AQN on the rollout copy only, per packed matrix
  (`RolloutNoiseInjector`), masters in pinned CPU memory, every operation on the
  GPU. Every weight sync leaves the rollout clean (the fp32 masters of the weights
  it changed are re-read; under LoRA it changes none); the trainer then sets the
  noise for the weights version the next rollouts use, or none while validating.
  Restore-then-perturb, deterministic per version, achieved std per layer appended
  to a log (DESIGN.md lessons 1-3).
- `TrainerNoise`: the trainer-side bookkeeping of which noise the rollout must
  carry: the last synced weights version, or none during validation (lesson 5).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rin_train.noise import NoiseInjector
from rin_train.verl.settings import PluginSettings
from srdd.errors import SrddError
from srdd.formats import fake_quantize, get_format
from srdd.qlinear import LinearQuantConfig, QuantMode, quantize_linears

# --- actor -----------------------------------------------------------------------------------------


def install_on_actor(model: nn.Module, settings: PluginSettings) -> list[str]:
    """Fake-quantize the actor's (PEFT-wrapped) HF model in place; prints and returns the module names."""
    config = settings.linear_quant()
    names = quantize_linears(model, config)
    print(f"srdd verl plugin: actor: quantized {len(names)} linear modules under {config.label} (excluded: "
          f"{', '.join(config.exclude) or 'none'}; LoRA adapters stay full precision):", flush=True)
    for name in names:
        print(f"  {name}", flush=True)
    return names


# --- rollout: quantization -------------------------------------------------------------------------


def packed_rows(layer: nn.Module) -> list[int]:
    """Output rows of each matrix vLLM packed into `layer` (q/k/v into qkv_proj, gate/up into gate_up_proj):
    its `output_partition_sizes` (this tensor-parallel rank's share of each), [rows] for an unfused layer."""
    rows = list(getattr(layer, "output_partition_sizes", None) or [layer.weight.shape[0]])
    if sum(rows) != layer.weight.shape[0]:
        raise RuntimeError(f"srdd verl plugin: output_partition_sizes {rows} do not add up to the weight's "
                           f"{layer.weight.shape[0]} rows")
    return rows


def quantize_packed(weight: torch.Tensor, rows: list[int], config: LinearQuantConfig) -> torch.Tensor:
    """Q(W) of a fused weight as the actor computes it: each packed matrix quantized on its own.

    Formats with a per-tensor scale (two-level NVFP4, per-tensor FP8) would otherwise take one scale for
    q, k and v together; block formats give the same bits either way (their blocks run along the rows).
    """
    weight = weight.detach()
    if len(rows) == 1:
        return fake_quantize(weight, config.format, **config.options)
    return torch.cat([fake_quantize(part, config.format, **config.options) for part in weight.split(rows)])


class LinearFakeQuant:
    """What one vLLM linear layer computes in place of its unquantized GEMM: y = q(x) q(W)^T + b.

    q(W) is computed per packed matrix (`quantize_packed`). With `cache` the quantized
    weight is kept and recomputed when the weight's storage or version changes. vLLM's
    weight loaders write through `param.data`, which does not bump the version counter,
    so the plugin also calls `invalidate` after every weight sync. Without `cache`
    (a model whose cached copies would not fit beside vLLM's pool) it is recomputed at
    every call and only one layer's copy is alive at a time.
    """

    def __init__(self, config: LinearQuantConfig, *, cache: bool = True) -> None:
        self.config = config
        self.cache = cache
        self.weight_quantizations = 0
        self.invalidate()

    def invalidate(self) -> None:
        self._cache: torch.Tensor | None = None
        self._key: tuple | None = None

    def quantized_weight(self, layer: nn.Module) -> torch.Tensor:
        weight = layer.weight
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        if self._cache is not None and self._key == key:
            return self._cache
        quantized = quantize_packed(weight, packed_rows(layer), self.config)
        self.weight_quantizations += 1
        if self.cache:
            self._cache, self._key = quantized, key
        return quantized

    def __call__(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        mode = self.config.mode
        if mode.activations:
            x = fake_quantize(x, self.config.format, **self.config.options)
        weight = self.quantized_weight(layer) if mode.weights else layer.weight
        return F.linear(x, weight, bias)


def _is_vllm_linear(module: nn.Module) -> bool:
    """vLLM's LinearBase: its own 2-D weight parameter and a quant_method. vLLM's LoRA wrappers forward both
    attributes to their base_layer without owning the parameter, so a wrapped linear is found once."""
    own = module._parameters.get("weight")
    return hasattr(module, "quant_method") and own is not None and own.ndim == 2


def _excluded(name: str, patterns: list[re.Pattern], packed: dict[str, list[str]]) -> bool:
    """Whether `name` is excluded; a fused module is excluded only when all of its parts are."""
    parent, _, leaf = name.rpartition(".")
    parts = [f"{parent}.{p}" if parent else p for p in packed.get(leaf, [])]
    hit = any(p.search(name) for p in patterns)
    if not parts:
        return hit
    hits = [any(p.search(part) for p in patterns) for part in parts]
    if any(hits) and not all(hits):
        raise SrddError(f"quant.exclude excludes {[p for p, h in zip(parts, hits) if h]} but not "
                        f"{[p for p, h in zip(parts, hits) if not h]}; vLLM fuses them into {name}, so the rollout "
                        "cannot quantize them differently; exclude all of them or none")
    return hit or all(hits)


VLLM_PACKED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
"""How vLLM fuses a Llama/Qwen-style decoder layer's projections (`packed_modules_mapping` of its models)."""


EMBEDDING_MODULES = ("lm_head", "model.embed_tokens")
"""Modules vLLM computes through an embedding method (ParallelLMHead, VocabParallelEmbedding), whose 2-D
weight and `quant_method` look like a linear's but which run no GEMM the plugin can replace."""


def check_rollout_exclusions(config: LinearQuantConfig, num_layers: int) -> None:
    """Refuse, before a run starts, exclusions the vLLM rollout cannot mirror (HF module names): one that
    splits a projection vLLM fuses, or lm_head / embed_tokens left out of quant.exclude (vLLM computes both
    through embedding methods: the rollout would stop at its first weight sync)."""
    patterns = [re.compile(p) for p in config.exclude]
    if config.mode is not QuantMode.NONE:
        for name in EMBEDDING_MODULES:
            if not any(p.search(name) for p in patterns):
                leaf = name.rpartition(".")[2]
                raise SrddError(f"the vLLM rollout computes {leaf} through an embedding method and cannot "
                                f"fake-quantize it; keep {leaf} in quant.exclude for the verl engine")
    for layer in range(num_layers):
        for fused in ("self_attn.qkv_proj", "mlp.gate_up_proj"):
            _excluded(f"model.layers.{layer}.{fused}", patterns, VLLM_PACKED)


def install_on_rollout(model: nn.Module, settings: PluginSettings, outside: OutsidePool | None = None) -> list[str]:
    """Fake-quantize every vLLM linear layer of the rollout model not excluded; returns their names.

    A layer whose quant_method is not vLLM's UnquantizedLinearMethod (an FP8 or
    other real quantization) is refused: fake quantization needs the full
    precision weights. `outside`: the GPU memory vLLM's pool leaves (on a CUDA rollout): the plugin's
    memory must fit there (`keep_cache`).
    """
    config = settings.linear_quant()
    if config.mode is QuantMode.NONE:
        return []
    patterns = [re.compile(p) for p in config.exclude]
    packed = dict(getattr(model, "packed_modules_mapping", None) or {})
    per_tensor = get_format(config.format, **config.options).uses_tensor_amax
    layers: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if not _is_vllm_linear(module):
            continue
        logical = name.removesuffix(".base_layer")  # vLLM's LoRA wrappers hold the linear as base_layer
        if _excluded(logical, patterns, packed):
            continue
        if isinstance(module.__dict__.get("srdd_quant"), LinearFakeQuant):
            raise SrddError(f"{logical} is already fake-quantized; each linear is wrapped exactly once")
        method = module.quant_method
        if "Embedding" in type(method).__name__:
            raise SrddError(f"vLLM computes {logical} through {type(method).__name__}, not a linear GEMM, so the "
                            "rollout cannot fake-quantize it; keep it in quant.exclude")
        if type(method).__name__ != "UnquantizedLinearMethod":
            raise SrddError(f"{logical} runs {type(method).__name__} in the rollout; srdd's fake quantization "
                            "needs unquantized rollout weights (drop the rollout's own quantization)")
        if per_tensor and is_sharded(module):
            raise SrddError(f"{config.format} scales each weight by its whole-tensor amax, but {logical} is split "
                            f"over {module.tp_size} tensor-parallel ranks, so the rollout would quantize with "
                            "other scales than the actor; set actor_rollout_ref.rollout.tensor_model_parallel_size=1")
        layers.append((logical, module))
    if not layers:
        raise SrddError(f"no linear layer of the rollout model ({type(model).__name__}) can be quantized under "
                        f"{config.label}; expected vLLM linear layers")
    weights = [m.weight for _, m in layers]
    cache = config.mode.weights
    if outside is not None:
        cache_bytes = sum(w.numel() * w.element_size() for w in weights) if cache else 0
        cache = keep_cache(outside, plugin_temporaries(config, weights, outside), cache_bytes) and cache
    for _, module in layers:
        quant = LinearFakeQuant(config, cache=cache)
        module.srdd_quant = quant
        module.quant_method.apply = quant  # an instance attribute: vLLM calls layer.quant_method.apply(layer, x, bias)
    names = [name for name, _ in layers]
    print(f"srdd verl plugin: rollout: quantized {len(names)} linear modules under {config.label} (quantized weights "
          f"{'cached' if cache else 'recomputed at every call: a cached copy would not fit'}):", flush=True)
    for name in names:
        print(f"  {name}", flush=True)
    return names


CACHE_SHARE = 0.05
"""Largest share of the GPU's memory the rollout's cached quantized weights (with the plugin's temporaries)
may take. They live outside vLLM's pool (colocated with the FSDP actor, they stay while it trains), so a 7B
model's 13 GB (bf16) are recomputed per call instead; the 1.5B reference model's 2.6 GB fit an 80 GB GPU."""


@dataclass(frozen=True)
class OutsidePool:
    """What vLLM 0.24 leaves of a GPU: it sizes its KV cache so that weights, the activations of its profiling
    run and the cache fill `gpu_memory_utilization` x the device (vllm/v1/worker/gpu_worker.py,
    determine_available_memory). Its profiling ran at start-up, before the plugin installs at the first
    weight sync, so everything the plugin allocates comes out of the rest, beside the CUDA context and
    the colocated FSDP actor."""

    total: int
    """Bytes of device memory."""
    utilization: float
    """vLLM's gpu_memory_utilization (verl's rollout default: 0.5)."""
    max_tokens: int
    """vLLM's max_num_batched_tokens: the most rows one forward's activations have (verl's default: 8192)."""

    @property
    def headroom(self) -> int:
        return int((1 - self.utilization) * self.total)


NOISE_TEMPORARIES = 4
"""fp32 copies of one target the noise path holds at once on the device (the draw, the master moved there,
and a quantized view of the weight and of the master): it works one target at a time."""


def plugin_temporaries(config: LinearQuantConfig, weights: list[torch.Tensor], outside: OutsidePool) -> int:
    """Peak bytes the plugin allocates outside vLLM's pool besides a cache: the fake quantization of one
    forward's widest activations (measured on the device, max_tokens rows) and of the largest weight (when
    not cached), and the noise path's temporaries (NOISE_TEMPORARIES fp32 copies of the largest weight)."""
    largest = max(weights, key=torch.Tensor.numel)
    device = largest.device
    widest = max(w.shape[1] for w in weights)
    measured = 0
    if device.type == "cuda" and config.mode.activations:
        x = torch.zeros(outside.max_tokens, widest, dtype=largest.dtype, device=device)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fake_quantize(x, config.format, **config.options)
        measured = torch.cuda.max_memory_allocated(device) - before
        del x
    return measured + largest.numel() * (largest.element_size() + NOISE_TEMPORARIES * 4)


def keep_cache(outside: OutsidePool, temporaries: int, cache_bytes: int) -> bool:
    """Whether the quantized weights may be cached; refuses a gpu_memory_utilization that leaves less than the
    plugin's temporaries outside vLLM's pool (they would run the GPU out of memory in the first rollout)."""
    gib = 2**30
    if temporaries > outside.headroom:
        raise SrddError(f"gpu_memory_utilization {outside.utilization} leaves {outside.headroom / gib:.2f} GiB of the "
                        f"GPU outside vLLM's pool, less than the {temporaries / gib:.2f} GiB srdd's fake quantization "
                        f"and noise need there (at max_num_batched_tokens {outside.max_tokens}); lower "
                        "actor_rollout_ref.rollout.gpu_memory_utilization or max_num_batched_tokens")
    return temporaries + cache_bytes <= min(CACHE_SHARE * outside.total, outside.headroom)


def invalidate_rollout_quant(model: nn.Module) -> None:
    """Drop every cached quantized weight (after a weight sync wrote new values through `.data`)."""
    for module in model.modules():
        quant = module.__dict__.get("srdd_quant")  # the layer's own, not one a LoRA wrapper forwards to
        if isinstance(quant, LinearFakeQuant):
            quant.invalidate()


# --- rollout: noise --------------------------------------------------------------------------------


def packed_part_names(name: str, packed: dict[str, list[str]]) -> list[str]:
    """HF names of the matrices a vLLM module packs ("layers.0.self_attn.qkv_proj" -> q_proj, k_proj,
    v_proj in its place; a LoRA wrapper's ".base_layer" stays at the end); [name] for an unfused module."""
    logical = name.removesuffix(".base_layer")
    suffix = name[len(logical):]
    parent, _, leaf = logical.rpartition(".")
    return [f"{parent}.{part}{suffix}" if parent else f"{part}{suffix}" for part in packed.get(leaf, [leaf])]


SHARDED_LINEARS = frozenset({"ColumnParallelLinear", "RowParallelLinear"})
"""vLLM's linear classes whose weight each tensor-parallel rank holds a slice of (vllm/model_executor/layers/
linear.py; QKVParallelLinear and MergedColumnParallelLinear derive from ColumnParallelLinear). A
ReplicatedLinear also carries tp_size > 1 under TP (LinearBase sets it), but every rank holds it whole."""


def is_sharded(module: nn.Module) -> bool:
    """Whether this rank holds a tensor-parallel slice of `module`'s weight, not the whole of it."""
    return getattr(module, "tp_size", 1) > 1 and any(c.__name__ in SHARDED_LINEARS for c in type(module).__mro__)


def part_streams(module: nn.Module, parts: int) -> list[int]:
    """The noise stream of each matrix packed into `module` on this rank: 0 for a tensor every rank holds whole
    (RMSNorm weights, ReplicatedLinear, anything at TP=1), 1 + the shard's index for a tensor-parallel slice.
    QKVParallelLinear holds a KV head on `num_kv_head_replicas` ranks when there are fewer KV heads than ranks:
    those ranks hold the same k and v rows (shard tp_rank // num_kv_head_replicas), so they share a stream."""
    if not is_sharded(module):
        return [0] * parts
    rank = module.tp_rank
    replicas = getattr(module, "num_kv_head_replicas", None)
    if replicas is None:
        return [1 + rank] * parts
    return [1 + rank] + [1 + rank // replicas] * (parts - 1)


class RolloutNoiseInjector(NoiseInjector):
    """NoiseInjector on vLLM's rollout model, perturbing exactly the matrices the actor has.

    A fused weight (qkv_proj, gate_up_proj) becomes one target per packed matrix, a view of its
    rows named as the HF matrix, so relative sigma takes each matrix's own RMS (v_proj's is not
    k_proj's) and noise.exclude_patterns written with HF names (`q_proj`, `up_proj`) match as they
    do on the actor. The fp32 masters of CUDA weights live in pinned CPU memory: for linear targets
    they are twice the size of the bf16 weights and sit outside vLLM's sleep pool.

    Tensor parallelism: a tensor every rank holds whole (RMSNorm weights, replicated linears, KV heads
    replicated over ranks) draws the same noise on every rank, from stream 0, so all ranks run one noisy
    model; only a slice of a sharded linear draws from its shard's own stream. Relative sigma takes each
    slice's own RMS: vLLM's slices of a matrix are equal-sized, so the full matrix's noise power is
    sigma^2 * mean(rms_shard^2) = sigma^2 * rms_full^2, and std(n)/rms(W0) of the full matrix, the nominal
    sigma of DESIGN.md §3, is exactly the scheduled sigma, with no communication between ranks. What
    differs from TP=1 is how the noise spreads: a slice with a larger RMS (a louder head) gets
    proportionally more; so compare runs at one tensor-parallel size (srdd's command sets 1).

    The effective sigma of a linear target is measured through the layer's LinearFakeQuant (each
    packed matrix quantized on its own, as the GEMM does), so `sigma_layers_effective` and
    `noise.sigma_basis: effective` mean in the rollout what they mean in the TRL engine. That of an
    RMSNorm target is not measured here: vLLM's norm fuses the residual add and returns a tuple, so
    the hook the TRL engine uses would read the wrong tensor; such a layer reports its linears alone.
    """

    norm_measurable = False

    def __init__(self, model: nn.Module, cfg, *, seed: int, effective: bool = False) -> None:
        self.packed = dict(getattr(model, "packed_modules_mapping", None) or {})
        super().__init__(model, cfg, seed=seed, effective=effective)

    def weights_of(self, name: str, module: nn.Module) -> list[tuple[str, torch.Tensor, int]]:
        names = packed_part_names(name, self.packed)
        if len(names) == 1:
            return [(name, module.weight, part_streams(module, 1)[0])]
        rows = packed_rows(module)
        if len(rows) != len(names):
            raise RuntimeError(f"srdd verl plugin: {name} packs {names} but has output partitions {rows}")
        return list(zip(names, module.weight.split(rows), part_streams(module, len(names))))

    def stream_seed(self, stream: int) -> int:
        return self.seed * 4096 + stream

    def gemm_view(self, module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        quant = getattr(module, "srdd_quant", None)
        if not isinstance(quant, LinearFakeQuant) or not quant.config.mode.weights:
            return lambda w: w
        fmt, options = quant.config.format, quant.config.options
        return lambda w: fake_quantize(w, fmt, **options)

    def master_of(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.device.type != "cuda":
            return super().master_of(weight)
        master = torch.empty(weight.shape, dtype=torch.float32, pin_memory=True)
        return master.copy_(weight.detach())


class RolloutNoise:
    """The noise state of one rollout worker's model."""

    def __init__(self, settings: PluginSettings, *, rank: int = 0, replica: str = "0") -> None:
        self.settings = settings
        self.config = settings.noise_config()
        self.rank = rank
        self.replica = replica
        self.injector: NoiseInjector | None = None
        self._model: nn.Module | None = None
        self.log_path = Path(settings.noise_log_dir) / f"{socket.gethostname()}-{os.getpid()}.jsonl"

    def before_sync(self) -> None:
        """Put the clean weights back, so parameters a sync does not rewrite hold no stale noise."""
        if self.injector is not None:
            self.injector.restore()

    def after_sync(self, model: nn.Module) -> None:
        """Make the masters those of the freshly synced (clean) weights: only the weights the sync changed are
        re-read and get new effective-sigma curves (none under LoRA, where verl sends the adapters alone)."""
        if self.injector is not None and model is self._model and self.injector.refresh() is not None:
            return
        self.injector = None  # free the old masters first: for linear targets they are a copy of every weight
        self.injector = RolloutNoiseInjector(model, self.config, seed=self.settings.seed, effective=True)
        self._model = model

    def apply(self, version: int | None) -> dict:
        """Noise for weights `version` (restore, then perturb), or clean weights for None."""
        if self.injector is None:
            raise RuntimeError("srdd verl plugin: rollout noise set before the first weight sync")
        if version is None:
            self.injector.restore()
            return {"version": None, "sigma": None, "sigma_layers": None, "sigma_layers_effective": None}
        record = {"version": version, **self.injector.perturb(version, self.settings.total_steps),
                  "sigma_layers_effective": self.injector.effective_layers()}
        self._log(record)
        return record

    def _log(self, record: dict) -> None:
        line = {**record, "rank": self.rank, "replica": self.replica, "time": round(time.time(), 3)}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line, allow_nan=False) + "\n")


@dataclass
class TrainerNoise:
    """Which noise the rollout must carry: that of the last synced weights version, none while validating."""

    version: int | None = None
    validating: bool = False

    def synced(self, global_steps: int | None) -> int | None:
        """A weight sync finished (verl passes global_steps None for re-syncs inside validation)."""
        if global_steps is not None:
            self.version = global_steps
        return self.target()

    def validation_begins(self) -> int | None:
        self.validating = True
        return self.target()

    def validation_ends(self) -> int | None:
        self.validating = False
        return self.target()

    def target(self) -> int | None:
        return None if self.validating else self.version
