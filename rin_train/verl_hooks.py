"""What the verl plugin installs on models, written against the model objects only (no verl import).

`rin_train.verl_plugin` calls these from inside verl's processes; keeping them
free of verl and vLLM imports lets the tests run them on CPU on the same model
layouts verl holds:

- `install_on_actor`: the actor's policy as verl's FSDP engine holds it right
  after `_build_lora_module` (a PEFT-wrapped `AutoModelForCausalLM`, not yet
  FSDP-wrapped) gets srdd.qlinear's W4A4 fake quantization with STE, exactly as
  the TRL engine's policy does: every plain linear except `quant.exclude`,
  PEFT's base_layer included, LoRA adapters full precision.
- `install_on_rollout`: vLLM's linear layers (`LinearBase`: a 2-D `weight`
  applied through `quant_method.apply(layer, x, bias)`, the call vLLM's LoRA
  wrappers also make for the base layer) compute q(x) q(W)^T + b instead of
  their unquantized GEMM. vLLM fuses q/k/v and gate/up, so an exclude pattern
  may not split a fused module.
- `RolloutNoise`: QeRL's AQN on the rollout copy only. Every weight sync leaves
  the rollout clean (the fp32 masters are re-read from the freshly synced
  weights); the trainer then sets the noise for the weights version the next
  rollouts use, or none while validating. Restore-then-perturb, deterministic per
  version, achieved std per layer appended to a log (DESIGN.md lessons 1-3).
- `TrainerNoise`: the trainer-side bookkeeping of which noise the rollout must
  carry: the last synced weights version, or none during validation (lesson 5).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rin_train.noise import NoiseInjector
from rin_train.verl_settings import PluginSettings
from srdd.errors import SrddError
from srdd.formats import fake_quantize
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


class LinearFakeQuant:
    """What one vLLM linear layer computes in place of its unquantized GEMM: y = q(x) q(W)^T + b.

    The quantized weight is cached and recomputed when the weight's storage or
    version changes. vLLM's weight loaders write through `param.data`, which does
    not bump the version counter, so the plugin also calls `invalidate` after
    every weight sync.
    """

    def __init__(self, config: LinearQuantConfig) -> None:
        self.config = config
        self.weight_quantizations = 0
        self.invalidate()

    def invalidate(self) -> None:
        self._cache: torch.Tensor | None = None
        self._key: tuple | None = None

    def quantized_weight(self, weight: torch.Tensor) -> torch.Tensor:
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        if self._cache is None or self._key != key:
            self._cache = fake_quantize(weight.detach(), self.config.format, **self.config.options)
            self._key = key
            self.weight_quantizations += 1
        return self._cache

    def __call__(self, layer: nn.Module, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        mode = self.config.mode
        if mode.activations:
            x = fake_quantize(x, self.config.format, **self.config.options)
        weight = self.quantized_weight(layer.weight) if mode.weights else layer.weight
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


def check_rollout_exclusions(config: LinearQuantConfig, num_layers: int) -> None:
    """Refuse, before a run starts, exclusions the vLLM rollout cannot mirror (HF module names): one that
    splits a projection vLLM fuses, or an lm_head left quantized (vLLM computes it as an embedding)."""
    patterns = [re.compile(p) for p in config.exclude]
    if config.mode is not QuantMode.NONE and not any(p.search("lm_head") for p in patterns):
        raise SrddError("the vLLM rollout computes lm_head through an embedding method and cannot fake-quantize it "
                        "as the actor would; keep lm_head in quant.exclude for the verl engine")
    for layer in range(num_layers):
        for fused in ("self_attn.qkv_proj", "mlp.gate_up_proj"):
            _excluded(f"model.layers.{layer}.{fused}", patterns, VLLM_PACKED)


def install_on_rollout(model: nn.Module, settings: PluginSettings) -> list[str]:
    """Fake-quantize every vLLM linear layer of the rollout model not excluded; returns their names.

    A layer whose quant_method is not vLLM's UnquantizedLinearMethod (an FP8 or
    other real quantization) is refused: fake quantization needs the full
    precision weights.
    """
    config = settings.linear_quant()
    if config.mode is QuantMode.NONE:
        return []
    patterns = [re.compile(p) for p in config.exclude]
    packed = dict(getattr(model, "packed_modules_mapping", None) or {})
    names = []
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
        quant = LinearFakeQuant(config)
        module.srdd_quant = quant
        method.apply = quant  # an instance attribute: vLLM calls layer.quant_method.apply(layer, x, bias)
        names.append(logical)
    if not names:
        raise SrddError(f"no linear layer of the rollout model ({type(model).__name__}) can be quantized under "
                        f"{config.label}; expected vLLM linear layers")
    print(f"srdd verl plugin: rollout: quantized {len(names)} linear modules under {config.label}:", flush=True)
    for name in names:
        print(f"  {name}", flush=True)
    return names


def invalidate_rollout_quant(model: nn.Module) -> None:
    """Drop every cached quantized weight (after a weight sync wrote new values through `.data`)."""
    for module in model.modules():
        quant = module.__dict__.get("srdd_quant")  # the layer's own, not one a LoRA wrapper forwards to
        if isinstance(quant, LinearFakeQuant):
            quant.invalidate()


# --- rollout: noise --------------------------------------------------------------------------------


def _rank_seed(seed: int, rank: int) -> int:
    """Tensor-parallel shards of one weight get different noise; replicas (same rank) the same noise."""
    return seed * 4096 + rank


class RolloutNoise:
    """The noise state of one rollout worker's model."""

    def __init__(self, settings: PluginSettings, *, rank: int = 0, replica: str = "0") -> None:
        self.settings = settings
        self.config = settings.noise_config()
        self.rank = rank
        self.replica = replica
        self.injector: NoiseInjector | None = None
        self.log_path = Path(settings.noise_log_dir) / f"{socket.gethostname()}-{os.getpid()}.jsonl"

    def before_sync(self) -> None:
        """Put the clean weights back, so parameters a sync does not rewrite hold no stale noise."""
        if self.injector is not None:
            self.injector.restore()

    def after_sync(self, model: nn.Module) -> None:
        """Re-read the fp32 masters from the freshly synced (clean) weights."""
        self.injector = None  # free the old masters first: for linear targets they are a copy of every weight
        self.injector = NoiseInjector(model, self.config, seed=_rank_seed(self.settings.seed, self.rank))

    def apply(self, version: int | None) -> dict:
        """Noise for weights `version` (restore, then perturb), or clean weights for None."""
        if self.injector is None:
            raise RuntimeError("srdd verl plugin: rollout noise set before the first weight sync")
        if version is None:
            self.injector.restore()
            return {"version": None, "sigma": None, "sigma_layers": None}
        record = {"version": version, **self.injector.perturb(version, self.settings.total_steps)}
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
