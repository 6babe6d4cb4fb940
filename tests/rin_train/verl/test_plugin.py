"""The verl plugin's pieces on CPU, without verl: what it installs on the actor and on the rollout copy,
the trainer-side noise bookkeeping, the import hook, the settings file and the reward function.

The tests marked `verl` run only where verl 0.9.1 is importable (e.g. a separate venv): they check our
patch targets against verl's real code and run verl's own `_build_lora_module` through the patch.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rin_train.noise import NoiseInjector
from rin_train.post_import import when_imported
from rin_train.presets import preset
from rin_train.rewards import flexible_reward, strict_reward, training_reward
from rin_train.run_config import load_run_config
from rin_train.verl.hooks import (VLLM_PACKED, LinearFakeQuant, OutsidePool, RolloutNoise, RolloutNoiseInjector,
                                  TrainerNoise, install_on_actor, install_on_rollout, invalidate_rollout_quant,
                                  plugin_temporaries)
from rin_train.verl.launch import read_noise_logs
from rin_train.verl.reward import compute_score
from rin_train.verl.settings import SETTINGS_ENV, PluginSettings
from srdd.errors import SrddError
from srdd.formats import fake_quantize
from srdd.models import decoder_layers, load_causal_lm
from srdd.qlinear import LinearQuantConfig, QuantLinear, quantization_disabled, quantize_linears
from srdd.quiet import library_notices_silenced

HAS_VERL = importlib.util.find_spec("verl") is not None
verl_only = pytest.mark.skipif(not HAS_VERL, reason="verl is not installed here")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _settings(tmp_path, *sets: str) -> PluginSettings:
    cfg = load_run_config(preset=preset("smoke"), name="t", sets=["engine=verl", *sets])
    return PluginSettings.from_run_config(cfg, tmp_path / "noise")


def _peft_actor(model_dir):
    """The actor as verl's FSDPEngine._build_lora_module leaves it: AutoModelForCausalLM + get_peft_model."""
    from peft import LoraConfig, TaskType, get_peft_model

    model = load_causal_lm(str(model_dir))[0]
    with library_notices_silenced():  # peft asks transformers 5 a deprecated attribute
        return get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8,
                                                target_modules=LORA_TARGETS, bias="none"))


# --- actor ---------------------------------------------------------------------------------------------

def test_actor_every_targeted_linear_quantized_exactly_once(tiny_model_dir, tmp_path, capsys):
    actor = _peft_actor(tiny_model_dir)
    names = install_on_actor(actor, _settings(tmp_path))
    quantized = {n for n, m in actor.named_modules() if isinstance(m, QuantLinear)}
    assert set(names) == quantized and len(names) == 3 * 7  # 3 layers x (q, k, v, o, gate, up, down)
    assert all(n.endswith(".base_layer") for n in names)  # PEFT's base layer, not the LoRA wrapper
    assert not any("lora_" in n or "lm_head" in n or "embed_tokens" in n for n in quantized)
    assert "actor: quantized 21 linear modules under mxfp4/w4a4" in capsys.readouterr().out
    with pytest.raises(SrddError, match="exactly once"):
        install_on_actor(actor, _settings(tmp_path))

    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    logits = actor(input_ids=ids).logits
    with quantization_disabled(actor):
        clean = actor(input_ids=ids).logits
    assert not torch.allclose(logits, clean)  # W4A4 changes the forward
    actor(input_ids=ids)
    counts = {m.weight_quantizations for _, m in actor.named_modules() if isinstance(m, QuantLinear)}
    assert counts == {1}  # frozen base weights: quantized once, cached over later forwards
    logits.float().pow(2).mean().backward()  # STE: gradients reach the full-precision LoRA adapters
    lora_b = [p for n, p in actor.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_b)


# --- rollout noise -------------------------------------------------------------------------------------

def _relative_delta_std(weight: torch.Tensor, clean: torch.Tensor) -> float:
    return float((weight.detach().float() - clean).std() / clean.pow(2).mean().sqrt())


def test_rollout_noise_lands_on_the_rollout_copy_only_with_its_layer_multipliers(tiny_model_dir, tmp_path):
    settings = _settings(tmp_path, "noise.targets=[rmsnorm, linear]", "noise.schedule=constant",
                         "noise.sigma_start=0.05", "noise.sigma_end=0.05", "noise.num_stages=1",
                         "noise.layer_multipliers={0: 0.0, 1: 1.0, 2: 3.0}")
    actor = _peft_actor(tiny_model_dir)
    install_on_actor(actor, settings)
    rollout = load_causal_lm(str(tiny_model_dir))[0]  # vLLM's copy: separate weights, synced from the actor
    actor_before = {k: v.clone() for k, v in actor.state_dict().items()}
    clean = {k: v.clone() for k, v in rollout.state_dict().items()}

    noise = RolloutNoise(settings, rank=0)
    noise.after_sync(rollout)
    record = noise.apply(1)
    layers = decoder_layers(rollout)
    for layer, multiplier in ((0, 0.0), (1, 1.0), (2, 3.0)):
        prefix = f"model.layers.{layer}."
        down = _relative_delta_std(layers[layer].mlp.down_proj.weight, clean[prefix + "mlp.down_proj.weight"])
        norm = _relative_delta_std(layers[layer].input_layernorm.weight, clean[prefix + "input_layernorm.weight"])
        assert down == pytest.approx(0.05 * multiplier, rel=0.05, abs=1e-12)  # read back from the module
        assert norm == pytest.approx(0.05 * multiplier, rel=0.3, abs=1e-12)  # 64 values: loose
        assert record["sigma_layers"][str(layer)] == pytest.approx(0.05 * multiplier, rel=0.05, abs=1e-12)
    assert record["sigma"] == 0.05 and record["version"] == 1
    assert all(torch.equal(v, actor_before[k]) for k, v in actor.state_dict().items())  # actor stays clean

    noisy = {k: v.clone() for k, v in rollout.state_dict().items()}
    noise.apply(1)  # re-applied after a validation: restore, then the same noise again
    assert all(torch.equal(v, noisy[k]) for k, v in rollout.state_dict().items())
    noise.apply(2)  # a new version: fresh noise on the clean weights, never accumulated
    w = layers[2].mlp.down_proj.weight
    assert not torch.equal(w, noisy["model.layers.2.mlp.down_proj.weight"])
    assert _relative_delta_std(w, clean["model.layers.2.mlp.down_proj.weight"]) == pytest.approx(0.15, rel=0.05)
    noise.apply(None)  # validation: clean
    assert all(torch.equal(v, clean[k]) for k, v in rollout.state_dict().items())

    logged = read_noise_logs(tmp_path / "noise")
    assert sorted(logged) == [1, 2] and logged[1]["sigma_layers"]["2"] == pytest.approx(0.15, rel=0.05)
    lines = [json.loads(line) for f in (tmp_path / "noise").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert [rec["version"] for rec in lines] == [1, 1, 2] and {rec["rank"] for rec in lines} == {0}


def test_a_weight_sync_leaves_the_rollout_clean_and_refreshes_the_masters(tiny_model_dir, tmp_path):
    settings = _settings(tmp_path, "noise.targets=[rmsnorm]")
    rollout = load_causal_lm(str(tiny_model_dir))[0]
    noise = RolloutNoise(settings, rank=1)
    with pytest.raises(RuntimeError, match="before the first weight sync"):
        noise.apply(0)
    noise.after_sync(rollout)
    clean = {k: v.clone() for k, v in rollout.state_dict().items()}
    noise.apply(0)
    noise.before_sync()  # what the update_weights_from_ipc patch does before verl loads
    assert all(torch.equal(v, clean[k]) for k, v in rollout.state_dict().items())
    with torch.no_grad():  # verl's load writes the new actor weights through .data, as vLLM's loaders do
        for p in rollout.parameters():
            p.data.copy_(p.data + 0.01)
    synced = {k: v.clone() for k, v in rollout.state_dict().items()}
    noise.after_sync(rollout)
    noise.apply(1)
    noise.apply(None)
    assert all(torch.equal(v, synced[k]) for k, v in rollout.state_dict().items())  # the new weights, not the old


def test_trainer_noise_follows_syncs_and_stays_off_during_validation():
    state = TrainerNoise()
    assert state.synced(0) == 0  # on_init_end: weights version 0 -> the rollouts of step 1
    assert state.validation_begins() is None  # val_before_train on clean weights
    assert state.synced(None) is None  # re-sync inside validation (colocated reward): still clean
    assert state.validation_ends() == 0
    assert state.synced(1) == 1 and state.target() == 1


# --- rollout quantization (vLLM layout) --------------------------------------------------------------

class UnquantizedLinearMethod:
    """Stand-in with vLLM's interface (vllm/model_executor/layers/linear.py): apply(layer, x, bias) is the GEMM."""

    def apply(self, layer, x, bias=None):
        return F.linear(x, layer.weight, bias)


class VllmLinear(nn.Module):
    """Stand-in for vLLM's LinearBase: an [out, in] weight applied through `quant_method.apply`; a fused layer
    (QKVParallelLinear, MergedColumnParallelLinear) stacks its matrices' rows and lists their sizes in
    `output_partition_sizes` (vllm/model_executor/layers/linear.py)."""

    def __init__(self, n_in: int, n_out: int, parts: int = 1) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_out, n_in) * 0.05, requires_grad=False)
        self.output_partition_sizes = [n_out // parts] * parts
        self.quant_method = UnquantizedLinearMethod()

    @classmethod
    def packing(cls, *weights: torch.Tensor) -> VllmLinear:
        """The fused layer vLLM's weight loader builds from HF matrices."""
        layer = cls(weights[0].shape[1], sum(w.shape[0] for w in weights))
        layer.weight = nn.Parameter(torch.cat([w.detach() for w in weights]), requires_grad=False)
        layer.output_partition_sizes = [w.shape[0] for w in weights]
        return layer

    def forward(self, x):
        return self.quant_method.apply(self, x, None)


class ColumnParallelLinear(VllmLinear):
    """vLLM's classes by name (vllm/model_executor/layers/linear.py): under tensor parallelism a column- or
    row-parallel layer holds this rank's slice (`tp_rank`, `tp_size`), a ReplicatedLinear the whole weight."""


class QKVParallelLinear(ColumnParallelLinear):
    num_kv_head_replicas = 1


class RowParallelLinear(VllmLinear):
    pass


class ReplicatedLinear(VllmLinear):
    pass


def _tp(layer: VllmLinear, rank: int, size: int = 2) -> VllmLinear:
    layer.tp_rank, layer.tp_size = rank, size
    return layer


class VllmLinearWithLoRA(nn.Module):
    """Stand-in for vLLM's LoRA wrapper (vllm/lora/layers/base.py BaseLayerWithLoRA): holds the linear as
    base_layer, forwards public attribute misses (quant_method, weight) to it, and computes the base output
    through base_layer.quant_method.apply (LoRA's own contribution, added by punica kernels, is left out here)."""

    def __init__(self, base_layer: VllmLinear) -> None:
        super().__init__()
        self.base_layer = base_layer

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_"):
                raise
            return getattr(self._modules["base_layer"], name)

    def forward(self, x):
        return self.base_layer.quant_method.apply(self.base_layer, x, None)


class VllmRMSNorm(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n), requires_grad=False)


def _vllm_layer(hidden: int = 64) -> nn.Module:
    layer = nn.Module()
    layer.input_layernorm = VllmRMSNorm(hidden)
    layer.self_attn = nn.Module()
    layer.self_attn.qkv_proj, layer.self_attn.o_proj = VllmLinear(hidden, 3 * hidden, 3), VllmLinear(hidden, hidden)
    layer.mlp = nn.Module()
    layer.mlp.gate_up_proj, layer.mlp.down_proj = VllmLinear(hidden, 4 * hidden, 2), VllmLinear(2 * hidden, hidden)
    return layer


def _vllm_model() -> nn.Module:
    """vLLM's LlamaForCausalLM layout: fused qkv/gate_up, packed_modules_mapping, lm_head outside the layers."""
    torch.manual_seed(0)
    model = nn.Module()
    model.model = nn.Module()
    model.model.layers = nn.ModuleList([_vllm_layer() for _ in range(3)])
    attn, mlp = model.model.layers[1].self_attn, model.model.layers[1].mlp  # vLLM wraps LoRA targets
    attn.qkv_proj, mlp.down_proj = VllmLinearWithLoRA(attn.qkv_proj), VllmLinearWithLoRA(mlp.down_proj)
    model.lm_head = VllmLinear(64, 100)
    model.packed_modules_mapping = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
    return model


def test_rollout_linears_compute_quantized_activations_times_quantized_weights(tmp_path):
    model = _vllm_model()
    names = install_on_rollout(model, _settings(tmp_path))
    assert names == [f"model.layers.{i}.{m}" for i in range(3)
                     for m in ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")]
    qkv = model.model.layers[0].self_attn.qkv_proj
    x = torch.randn(5, 64)
    expected = F.linear(fake_quantize(x, "mxfp4"), fake_quantize(qkv.weight.detach(), "mxfp4"))
    assert torch.equal(qkv(x), expected)
    wrapped = model.model.layers[1].self_attn.qkv_proj  # through the LoRA wrapper: the base layer, quantized
    assert torch.equal(wrapped(x), F.linear(fake_quantize(x, "mxfp4"), fake_quantize(wrapped.weight.detach(), "mxfp4")))
    assert torch.equal(model.lm_head(x), F.linear(x, model.lm_head.weight))  # excluded by default
    qkv(x)
    assert qkv.srdd_quant.weight_quantizations == 1  # cached
    with torch.no_grad():
        qkv.weight.data.copy_(qkv.weight.data * 2)  # a weight sync: vLLM writes through .data (no version bump)
    invalidate_rollout_quant(model)
    assert torch.equal(qkv(x), F.linear(fake_quantize(x, "mxfp4"), fake_quantize(qkv.weight.detach(), "mxfp4")))
    with pytest.raises(SrddError, match="exactly once"):
        install_on_rollout(model, _settings(tmp_path))


def test_rollout_exclusions_respect_vllm_fused_modules(tmp_path):
    with pytest.raises(SrddError, match="fuses them into model.layers.0.self_attn.qkv_proj"):
        install_on_rollout(_vllm_model(), _settings(tmp_path, "quant.exclude=[lm_head, q_proj]"))
    names = install_on_rollout(_vllm_model(), _settings(tmp_path, "quant.exclude=[lm_head, 'q_proj|k_proj|v_proj']"))
    assert not any("qkv_proj" in n for n in names) and len(names) == 9
    model = _vllm_model()
    model.model.layers[0].mlp.down_proj.quant_method = type("Fp8LinearMethod", (), {})()
    with pytest.raises(SrddError, match="Fp8LinearMethod"):
        install_on_rollout(model, _settings(tmp_path))
    model = _vllm_model()  # vLLM's lm_head is a ParallelLMHead computed through an embedding method
    model.lm_head.quant_method = type("UnquantizedEmbeddingMethod", (), {})()
    with pytest.raises(SrddError, match="keep it in quant.exclude"):
        install_on_rollout(model, _settings(tmp_path, "quant.exclude=[embed_tokens]"))


def test_linear_noise_reaches_vllm_linear_layers(tmp_path):
    model = _vllm_model()
    cfg = _settings(tmp_path, "noise.targets=[linear]").noise_config()
    injector = NoiseInjector(model, cfg, seed=0)
    names = [t.name for t in injector.targets]
    assert {n.rsplit(".", 1)[-1] for n in names} == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj", "base_layer"}
    assert len(names) == 12 and len({id(t.param) for t in injector.targets}) == 12  # each weight once, LoRA-wrapped
    assert "layers.1.self_attn.qkv_proj.base_layer" in names  # ones included; lm_head is outside the layers


def _packed_parts(model: nn.Module):
    """(layer index, fused module, HF part rows) of every quantized rollout linear, LoRA wrappers unwrapped."""
    for i, layer in enumerate(model.model.layers):
        for name, module in layer.named_modules():
            if isinstance(module.__dict__.get("srdd_quant"), LinearFakeQuant):
                yield i, module, module.output_partition_sizes


def test_rollout_effective_sigma_is_what_the_quantized_gemm_sees(tmp_path):
    """Each packed matrix on its own, as the rollout's GEMM quantizes it: std(Q(W+n) - Q(W)) / rms(W)."""
    model = _vllm_model()
    settings = _settings(tmp_path, "noise.targets=[linear]", "noise.schedule=constant", "noise.sigma_start=0.02",
                         "noise.sigma_end=0.02", "noise.num_stages=1")
    install_on_rollout(model, settings)
    clean = {id(m): m.weight.detach().clone() for _, m, _ in _packed_parts(model)}
    noise = RolloutNoise(settings, rank=0)
    noise.after_sync(model)
    record = noise.apply(1)
    expected: dict[str, list[float]] = {}
    for i, module, rows in _packed_parts(model):
        for now, was in zip(module.weight.detach().split(rows), clean[id(module)].split(rows)):
            seen = fake_quantize(now, "mxfp4") - fake_quantize(was, "mxfp4")
            expected.setdefault(str(i), []).append(float(seen.std()) / float(was.pow(2).mean().sqrt()))
    effective = record["sigma_layers_effective"]
    assert effective.keys() == expected.keys()
    for layer, values in expected.items():
        assert effective[layer] == pytest.approx(sum(values) / len(values), rel=1e-5)
        assert effective[layer] > 2 * record["sigma_layers"][layer]  # MXFP4 rounding amplifies small noise
    assert read_noise_logs(tmp_path / "noise")[1]["sigma_layers_effective"] == pytest.approx(effective)
    assert noise.apply(None)["sigma_layers_effective"] is None


def test_rollout_sigma_basis_effective_inverts_the_rollout_quantizer(tmp_path):
    """Asked for an effective 0.1, the rollout delivers about 0.1 through its own W4 quantizer, with a smaller
    nominal sigma; an identity view (the layer's quantizer overlooked) would have delivered the nominal 0.1."""
    model = _vllm_model()
    settings = _settings(tmp_path, "noise.targets=[linear]", "noise.schedule=constant", "noise.sigma_start=0.1",
                         "noise.sigma_end=0.1", "noise.num_stages=1", "noise.sigma_basis=effective")
    install_on_rollout(model, settings)
    injector = RolloutNoiseInjector(model, settings.noise_config(), seed=0, effective=True)
    applied = injector.perturb(1, 3)["sigma_layers"]
    for layer, value in injector.effective_layers().items():
        assert value == pytest.approx(0.1, rel=0.15) and applied[layer] < 0.08, layer


def test_rollout_noise_only_moves_its_off_device_masters(tmp_path, masters_off_device):
    """The rollout's masters live in pinned CPU memory beside CUDA weights: from the first sync (verl's
    PPOTrainerSync.on_init_end -> update_weights(0)) on, the noise and effective-sigma paths may only copy
    them to the weights' device (the HostOnly double raises on anything else, as the GPU would)."""
    settings = _settings(tmp_path, "noise.targets=[rmsnorm, linear]")
    masters_off_device(RolloutNoiseInjector)
    model = _vllm_model()
    install_on_rollout(model, settings)
    clean = {n: p.detach().clone() for n, p in model.named_parameters()}
    noise = RolloutNoise(settings, rank=0)
    noise.after_sync(model)
    assert {type(t.clean).__name__ for t in noise.injector.targets} == {"HostOnly"}
    record = noise.apply(0)
    assert record["sigma_layers_effective"] and record["sigma_layers"]
    noise.before_sync()
    assert all(torch.equal(p, clean[n]) for n, p in model.named_parameters())
    noise.after_sync(model)
    noise.apply(1)


def test_effective_sigma_curves_are_kept_while_the_base_weights_are_unchanged(tmp_path):
    """Under LoRA verl syncs the adapters alone after the first sync (vllm_rollout/utils.py,
    update_weights_from_ipc: `peft_config and base_sync_done`): masters and effective-sigma curves stay. A
    sync that changes a weight re-reads that weight's master and curve only."""
    settings = _settings(tmp_path, "noise.targets=[linear]", "noise.sigma_basis=effective")
    model = _vllm_model()
    install_on_rollout(model, settings)
    noise = RolloutNoise(settings, rank=0)
    noise.after_sync(model)
    injector, curves = noise.injector, dict(noise.injector.basis.curves)
    first = noise.apply(1)
    for _ in range(2):  # two LoRA-only syncs
        noise.before_sync()
        noise.after_sync(model)
    assert noise.injector is injector and all(injector.basis.curves[i] is c for i, c in curves.items())
    assert noise.apply(1) == first
    noise.before_sync()
    down = model.model.layers[2].mlp.down_proj
    old_rms = next(t.rms for t in injector.targets if t.name == "layers.2.mlp.down_proj")
    with torch.no_grad():  # a full-weights sync that changes one matrix, written through .data as vLLM does
        down.weight.data.mul_(2.0)
    noise.after_sync(model)
    renewed = [i for i, c in curves.items() if injector.basis.curves[i] is not c]
    assert [injector.targets[i].name for i in renewed] == ["layers.2.mlp.down_proj"]
    target = injector.targets[renewed[0]]
    assert torch.equal(target.clean, down.weight.detach()) and target.rms == pytest.approx(2 * old_rms, rel=1e-6)


def _tp_rank_model(rank: int) -> nn.Module:
    """Rank `rank` of a 2-way tensor-parallel vLLM model with one KV head: the norms, the KV rows and a
    ReplicatedLinear are whole on both ranks, q rows and o_proj's input columns are split."""
    full = torch.Generator().manual_seed(0)
    model = nn.Module()
    model.model = nn.Module()
    model.model.layers = nn.ModuleList()
    for _ in range(3):
        q, k, v = (torch.randn(n, 64, generator=full) * 0.05 for n in (64, 16, 16))
        o, gate = torch.randn(64, 64, generator=full) * 0.05, torch.randn(32, 64, generator=full) * 0.05
        layer = nn.Module()
        layer.input_layernorm = VllmRMSNorm(64)
        with torch.no_grad():
            layer.input_layernorm.weight.add_(torch.randn(64, generator=full) * 0.1)
        layer.self_attn = nn.Module()
        qkv = QKVParallelLinear.packing(q[32 * rank:32 * (rank + 1)], k, v)
        qkv.num_kv_head_replicas = 2
        layer.self_attn.qkv_proj = _tp(qkv, rank)
        o_proj = RowParallelLinear.packing(o[:, 32 * rank:32 * (rank + 1)])
        layer.self_attn.o_proj = _tp(o_proj, rank)
        layer.mlp = nn.Module()
        layer.mlp.gate_proj = _tp(ReplicatedLinear.packing(gate), rank)
        model.model.layers.append(layer)
    model.packed_modules_mapping = VLLM_PACKED
    return model


def test_tensor_parallel_ranks_share_the_noise_of_the_tensors_they_both_hold(tmp_path):
    """vLLM replicates RMSNorm weights (layernorm.py), ReplicatedLinear and, with fewer KV heads than ranks,
    the k/v rows (QKVParallelLinear.num_kv_head_replicas) on every rank: those must carry one noise, or no
    single noisy model exists. Only the slices of a split matrix draw per-rank noise."""
    settings = _settings(tmp_path, "noise.targets=[rmsnorm, linear]")
    noise_of = []
    for rank in (0, 1):
        model = _tp_rank_model(rank)
        clean = {n: p.detach().clone() for n, p in model.named_parameters()}
        rollout = RolloutNoise(settings, rank=rank)
        rollout.after_sync(model)
        rollout.apply(1)
        noise_of.append({n: p.detach() - clean[n] for n, p in model.named_parameters()})
    for name, n0 in noise_of[0].items():
        n1 = noise_of[1][name]
        assert n0.abs().sum() > 0, name
        if name.endswith("qkv_proj.weight"):
            assert not torch.equal(n0[:32], n1[:32]) and torch.equal(n0[32:], n1[32:]), name  # q split; k, v whole
        elif name.endswith("o_proj.weight"):
            assert not torch.equal(n0, n1), name
        else:
            assert torch.equal(n0, n1), name  # norms and the replicated linear


def test_linear_fake_quant_modes(tmp_path):
    layer = VllmLinear(64, 32)
    x = torch.randn(3, 64)
    w4a16 = LinearFakeQuant(_settings(tmp_path, "quant.mode=w4a16").linear_quant())
    assert torch.equal(w4a16(layer, x), F.linear(x, fake_quantize(layer.weight.detach(), "mxfp4")))
    a4 = LinearFakeQuant(_settings(tmp_path, "quant.mode=a4").linear_quant())
    assert torch.equal(a4(layer, x), F.linear(fake_quantize(x, "mxfp4"), layer.weight))


FUSED = {"self_attn.qkv_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
         "mlp.gate_up_proj": ("mlp.gate_proj", "mlp.up_proj")}


def _vllm_from_hf(hf_model: nn.Module) -> nn.Module:
    """The rollout copy vLLM's loader builds from an HF Llama: q/k/v and gate/up stacked into fused layers."""
    model = nn.Module()
    model.model = nn.Module()
    model.model.layers = nn.ModuleList()
    for hf in decoder_layers(hf_model):
        layer = nn.Module()
        layer.self_attn, layer.mlp = nn.Module(), nn.Module()
        for fused, parts in {**FUSED, "self_attn.o_proj": ("self_attn.o_proj",), "mlp.down_proj": ("mlp.down_proj",)}.items():
            block, leaf = fused.split(".")
            setattr(getattr(layer, block), leaf, VllmLinear.packing(*(hf.get_submodule(p).weight for p in parts)))
        model.model.layers.append(layer)
    model.packed_modules_mapping = VLLM_PACKED
    return model


@pytest.mark.parametrize("fmt", ["nvfp4", "fp8_e4m3", "mxfp4", "int4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_rollout_weights_quantize_bit_for_bit_as_the_actor_matrices(tiny_model_dir, fmt, dtype):
    """vLLM's qkv_proj/gate_up_proj, quantized per packed slice, hold exactly the actor's per-matrix Q(W)."""
    hf = load_causal_lm(str(tiny_model_dir))[0].to(dtype)
    with torch.no_grad():  # v_proj and up_proj at other scales than their neighbours, as in trained models
        for layer in decoder_layers(hf):
            layer.self_attn.v_proj.weight.mul_(7.0)
            layer.mlp.up_proj.weight.mul_(0.2)
    rollout = _vllm_from_hf(hf)
    config = LinearQuantConfig(fmt, "w4a16")
    quantize_linears(hf, config)
    mismatching, whole_tensor = 0, 0
    for hf_layer, layer in zip(decoder_layers(hf), rollout.model.layers):
        for fused, parts in FUSED.items():
            actor = torch.cat([hf_layer.get_submodule(p).matmul_weight(dtype) for p in parts])
            packed = layer.get_submodule(fused)
            got = LinearFakeQuant(config).quantized_weight(packed)
            assert got.dtype == dtype and got.shape == actor.shape
            mismatching += int((got.view(torch.int16 if dtype == torch.bfloat16 else torch.int32)
                                != actor.view(torch.int16 if dtype == torch.bfloat16 else torch.int32)).sum())
            whole_tensor += int((fake_quantize(packed.weight.detach(), fmt) != actor).sum())
    assert mismatching == 0
    # one scale for the fused tensor is what per-slice quantization prevents (per-tensor formats only)
    assert (whole_tensor > 0) == (fmt in ("nvfp4", "fp8_e4m3"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("fmt", ["nvfp4", "fp8_e4m3", "mxfp4", "int4"])
def test_fused_rollout_quantization_on_cuda_equals_the_cpu_bits(fmt):
    torch.manual_seed(0)
    layer = VllmLinear.packing(torch.randn(64, 64) * 0.02, torch.randn(32, 64) * 0.05, torch.randn(32, 64) * 0.3)
    layer.to(torch.bfloat16)
    cpu = LinearFakeQuant(LinearQuantConfig(fmt)).quantized_weight(layer)
    layer.to("cuda")
    cuda = LinearFakeQuant(LinearQuantConfig(fmt)).quantized_weight(layer)
    assert torch.equal(cuda.cpu().view(torch.int16), cpu.view(torch.int16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("basis", ["nominal", "effective"])
def test_rollout_noise_on_cuda_with_pinned_masters(tmp_path, basis):
    """Linear noise (the default) on CUDA weights with masters in pinned CPU memory, as the first sync sets it
    (the crash of issue 26): it lands, its effective sigma is what the GPU's quantized GEMM sees, it restores."""
    model = _vllm_model().to("cuda", torch.bfloat16)
    settings = _settings(tmp_path, "noise.targets=[linear]", "noise.schedule=constant", "noise.sigma_start=0.1",
                         "noise.sigma_end=0.1", "noise.num_stages=1", f"noise.sigma_basis={basis}")
    install_on_rollout(model, settings)
    clean = {n: p.detach().clone() for n, p in model.named_parameters()}
    noise = RolloutNoise(settings, rank=0)
    noise.after_sync(model)
    assert all(t.clean.device.type == "cpu" and t.clean.is_pinned() for t in noise.injector.targets)
    record = noise.apply(0)
    expected: dict[str, list[float]] = {}
    for i, module, rows in _packed_parts(model):
        was = clean[next(n for n, p in model.named_parameters() if p is module.weight)]
        expected.setdefault(str(i), []).extend(
            float((fake_quantize(now, "mxfp4").float() - fake_quantize(w, "mxfp4").float()).std())
            / float(w.float().pow(2).mean().sqrt()) for now, w in zip(module.weight.split(rows), was.split(rows)))
    assert record["sigma_layers_effective"] == pytest.approx({k: sum(v) / len(v) for k, v in expected.items()},
                                                             rel=1e-4)
    if basis == "effective":
        assert all(v == pytest.approx(0.1, rel=0.15) for v in record["sigma_layers_effective"].values())
    noise.before_sync()
    assert all(torch.equal(p, clean[n]) for n, p in model.named_parameters())
    noise.after_sync(model)
    assert noise.apply(0) == record


def test_rollout_noise_takes_sigma_and_exclusions_per_packed_matrix(tiny_model_dir, tmp_path):
    hf = load_causal_lm(str(tiny_model_dir))[0]
    with torch.no_grad():
        for layer in decoder_layers(hf):
            layer.self_attn.v_proj.weight.mul_(7.0)  # a fused RMS would give v_proj 1/7 of its sigma or less
    rollout = _vllm_from_hf(hf)
    clean = {n: p.detach().clone() for n, p in rollout.named_parameters()}
    settings = _settings(tmp_path, "noise.targets=[linear]", "noise.schedule=constant", "noise.sigma_start=0.05",
                         "noise.sigma_end=0.05", "noise.num_stages=1", "noise.exclude_patterns=['layers\\.1\\..*up_proj']",
                         "noise.layer_multipliers={0: 1.0, 1: 2.0, 2: 1.0}")
    injector = RolloutNoiseInjector(rollout, settings.noise_config(), seed=0)
    names = [t.name for t in injector.targets]
    assert names[:6] == ["layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj", "layers.0.self_attn.v_proj",
                         "layers.0.self_attn.o_proj", "layers.0.mlp.gate_proj", "layers.0.mlp.up_proj"]
    assert "layers.1.mlp.up_proj" not in names and "layers.1.mlp.gate_proj" in names  # HF names, one matrix
    injector.perturb(1, 3)
    for i, layer in enumerate(rollout.model.layers):
        for fused, parts in FUSED.items():
            weight, before = layer.get_submodule(fused).weight, clean[f"model.layers.{i}.{fused}.weight"]
            rows = layer.get_submodule(fused).output_partition_sizes
            for part, now, was in zip(parts, weight.split(rows), before.split(rows)):
                sigma = _relative_delta_std(now, was)
                if i == 1 and part == "mlp.up_proj":
                    assert sigma == 0.0  # excluded by its HF name: the gate_proj rows beside it are perturbed
                else:
                    assert sigma == pytest.approx(0.05 * (2.0 if i == 1 else 1.0), rel=0.1), (i, part)
    injector.restore()
    assert all(torch.equal(p, clean[n]) for n, p in rollout.named_parameters())


def test_per_tensor_formats_refuse_tensor_parallel_rollout_and_large_caches_are_not_kept(tmp_path):
    model = _vllm_model()
    model.model.layers[2].mlp.down_proj = _tp(RowParallelLinear(128, 64), rank=0)
    with pytest.raises(SrddError, match="tensor_model_parallel_size=1"):
        install_on_rollout(model, _settings(tmp_path, "quant.format=nvfp4"))
    assert install_on_rollout(model, _settings(tmp_path))  # MXFP4's block scales do not depend on the split
    model = _vllm_model()  # a ReplicatedLinear carries tp_size under TP too, but every rank holds it whole
    model.model.layers[2].mlp.down_proj = _tp(ReplicatedLinear(128, 64), rank=1)
    assert install_on_rollout(model, _settings(tmp_path, "quant.format=nvfp4"))

    layer, x = VllmLinear(64, 32), torch.randn(3, 64)
    uncached = LinearFakeQuant(_settings(tmp_path).linear_quant(), cache=False)
    assert torch.equal(uncached(layer, x), uncached(layer, x))
    assert uncached.weight_quantizations == 2 and uncached._cache is None  # recomputed, nothing kept


def test_plugin_memory_must_fit_outside_vllms_pool(tmp_path):
    """vLLM fills gpu_memory_utilization x the GPU before the plugin installs; what the plugin adds must fit
    in the rest: a setting that leaves less than its temporaries is refused, a cache kept only where it fits."""
    settings = _settings(tmp_path)
    weights = [m.weight for _, m, _ in _packed_parts(_installed(settings))]
    temporaries = plugin_temporaries(settings.linear_quant(), weights, OutsidePool(10**9, 0.5, 8192))
    assert temporaries == 256 * 64 * (4 + 4 * 4)  # gate_up_proj, the largest weight: its copies (no CUDA here)
    cache = sum(w.numel() * 4 for w in weights)
    with pytest.raises(SrddError, match="gpu_memory_utilization 0.99 leaves 0.00 GiB"):
        install_on_rollout(_vllm_model(), settings, OutsidePool(10**7, 0.99, 8192))
    for total, kept in ((10**9, True), (20 * (temporaries + cache) - 1, False)):
        model = _vllm_model()
        install_on_rollout(model, settings, OutsidePool(total, 0.5, 8192))
        assert {m.srdd_quant.cache for _, m, _ in _packed_parts(model)} == {kept}


def _installed(settings: PluginSettings) -> nn.Module:
    model = _vllm_model()
    install_on_rollout(model, settings)
    return model


def test_prefix_cache_reset_follows_every_noise_change(tmp_path):
    """The trainer-side patches on stand-ins of verl's classes: every server's prefix cache is reset after the
    noise of each sync and after validation begins and ends, only once the noise call has completed."""
    _settings(tmp_path).write(tmp_path / "s.json")
    r = _python("""
        import sys, types
        import rin_train.verl.plugin as plugin

        events = []
        class Call:  # a Ray ObjectRef: awaited (async trainer code) or ray.get (sync)
            def __init__(self, what):
                self.what = what
                events.append(("issued",) + what)
            def done(self):
                events.append(("done",) + self.what)
            def __await__(self):
                self.done()
                yield from ()
        class Method:
            def __init__(self, server, name):
                self.server, self.name = server, name
            def remote(self, *args, kwargs=None):
                return Call((self.server, self.name, (kwargs or {}).get("version")))
        class Server:  # vLLMHttpServer: collective_rpc reaches its workers, clear_kv_cache its engine
            def __init__(self, name):
                self.collective_rpc, self.clear_kv_cache = Method(name, "noise"), Method(name, "reset")
        sys.modules["ray"] = types.SimpleNamespace(get=lambda calls: [c.done() for c in calls])

        async def update_weights(self, global_steps=None):
            events.append(("sync", global_steps))
        update_weights.__wrapped__ = update_weights
        def auto_await(fn):
            import asyncio
            return lambda *a, **k: asyncio.run(fn(*a, **k))
        base = types.SimpleNamespace(CheckpointEngineManager=type("M", (), {"update_weights": update_weights}),
                                     auto_await=auto_await)
        trainer_base = types.SimpleNamespace(PPOTrainer=type("T", (), {"on_validate_begin": lambda self: None,
                                                                       "on_validate_end": lambda self: None,
                                                                       "init": lambda self: None}))
        plugin.patch_sync(base)
        plugin.patch_trainer(trainer_base)
        manager = base.CheckpointEngineManager()
        manager.replicas = [types.SimpleNamespace(servers=[Server("a")]), types.SimpleNamespace(servers=[Server("b")])]
        trainer = trainer_base.PPOTrainer()
        trainer.checkpoint_manager = manager
        manager.update_weights(0); trainer.on_validate_begin(); trainer.on_validate_end(); manager.update_weights(1)
        for e in events:
            print(*e)
    """, **{SETTINGS_ENV: str(tmp_path / "s.json")})
    assert r.returncode == 0, r.stderr[-3000:]
    events = [tuple(line.split()) for line in r.stdout.splitlines()]

    def noise_change(version: str) -> list[tuple]:
        """Both servers' noise calls complete, then both prefix-cache resets are issued and complete."""
        return [(state, server, what, v) for what, v in (("noise", version), ("reset", "None"))
                for state in ("issued", "done") for server in "ab"]

    # sync 0, validation begins (clean) and ends (the noise of version 0 again), sync 1
    assert events == [("sync", "0"), *noise_change("0"), *noise_change("None"), *noise_change("0"),
                      ("sync", "1"), *noise_change("1")]


# --- settings, import hook, plugin loading ---------------------------------------------------------

def test_settings_round_trip_through_the_file(tmp_path):
    cfg = load_run_config(preset=preset("smoke"), name="t",
                          sets=["noise.layer_multipliers={0: 0.5, 2: 1.5}", "quant.format=nvfp4"])
    settings = PluginSettings.from_run_config(cfg, tmp_path / "noise")
    settings.write(tmp_path / "s.json")
    back = PluginSettings.read(tmp_path / "s.json")
    assert back == settings
    assert back.noise_config().to_dict() == cfg.noise.to_dict()
    assert back.linear_quant().label == cfg.quant_label == "nvfp4/w4a4"
    (tmp_path / "bad.json").write_text(json.dumps({**json.loads((tmp_path / "s.json").read_text()),
                                                   "noise_log_dir": "relative/dir"}))
    with pytest.raises(SrddError, match="must be absolute"):
        PluginSettings.read(tmp_path / "bad.json")
    with pytest.raises(SrddError, match="does not exist"):
        PluginSettings.read(tmp_path / "missing.json")


def test_post_import_patch_runs_when_the_module_is_imported(tmp_path, monkeypatch):
    pkg = tmp_path / "srdd_fake_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "late.py").write_text("class Engine:\n    def build(self):\n        return 'verl'\n")
    (pkg / "early.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    try:
        early = importlib.import_module("srdd_fake_pkg.early")
        when_imported("srdd_fake_pkg.early", lambda m: seen.append(("early", m.VALUE)))
        assert seen == [("early", 1)]  # already imported: patched at once

        def patch(module):
            original = module.Engine.build
            module.Engine.build = lambda self: original(self) + "+srdd"

        when_imported("srdd_fake_pkg.late", patch)
        late = importlib.import_module("srdd_fake_pkg.late")
        assert late.Engine().build() == "verl+srdd"
        assert early.VALUE == 1
    finally:
        for name in ("srdd_fake_pkg", "srdd_fake_pkg.early", "srdd_fake_pkg.late"):
            sys.modules.pop(name, None)


def _python(code: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in (SETTINGS_ENV, "VERL_USE_EXTERNAL_MODULES")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**environ, **env}, timeout=300)


def test_plugin_refuses_to_load_without_its_settings():
    r = _python("import rin_train.verl.plugin")
    assert r.returncode != 0 and f"${SETTINGS_ENV} is not set" in r.stderr


@pytest.mark.parametrize("noise, targets", [("true", 4), ("false", 2)])
def test_plugin_registers_its_verl_patches(tmp_path, noise, targets):
    _settings(tmp_path, f"noise.enabled={noise}").write(tmp_path / "s.json")
    r = _python("""
        import rin_train.verl.plugin as plugin
        from rin_train.post_import import registered
        print(sorted(registered()))
        print(sorted(n for n in registered() if n.startswith("verl.")) == sorted(list(plugin.TARGETS.values())[:%d]))
    """ % targets, **{SETTINGS_ENV: str(tmp_path / "s.json")})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.splitlines()[-1] == "True"


def test_actor_is_quantized_before_fsdp_wraps_it_with_or_without_lora(tiny_model_dir, tmp_path):
    """A stand-in with verl 0.9.1's build order (transformer_impl.py, FSDPEngine._build_model_optimizer:
    `_build_lora_module` only `if self._is_lora`, then `_build_fsdp_module` always): lora_rank=0 (full
    fine-tuning: a run config's lora.r=0) gets a quantized actor too, and an
    engine that bypasses _build_fsdp_module is refused instead of training unquantized."""
    _settings(tmp_path).write(tmp_path / "s.json")
    r = _python(f"""
        import types
        import rin_train.verl.plugin as plugin
        from srdd.models import load_causal_lm
        from srdd.qlinear import QuantLinear

        class FSDPEngine:
            def __init__(self, lora_rank):
                self.model_config = types.SimpleNamespace(model_type="language_model", lora_rank=lora_rank)
                self._is_lora = lora_rank > 0
            def _build_lora_module(self, module):
                from peft import LoraConfig, get_peft_model
                return get_peft_model(module, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
            def _build_fsdp_module(self, module):
                return module  # FSDP wraps it here
            def _build_model_optimizer(self):
                module = load_causal_lm({str(tiny_model_dir)!r})[0]
                if self._is_lora:
                    module = self._build_lora_module(module)
                self.module = self._build_fsdp_module(module)

        class Bypassing(FSDPEngine):
            def _build_fsdp_module(self, module):
                return module

        plugin.patch_actor(types.SimpleNamespace(FSDPEngine=FSDPEngine))
        for rank in (4, 0):
            engine = FSDPEngine(rank)
            engine._build_model_optimizer()
            print("quantized", rank, sum(isinstance(m, QuantLinear) for m in engine.module.modules()))
        try:
            Bypassing(0)._build_model_optimizer()
        except RuntimeError as exc:
            print("refused:", exc)
    """, **{SETTINGS_ENV: str(tmp_path / "s.json")})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in r.stdout.splitlines() if line.startswith(("quantized", "refused"))]
    assert lines[:2] == ["quantized 4 21", "quantized 0 21"]
    assert lines[2].startswith("refused: srdd verl plugin: Bypassing built its model without")


# --- reward ----------------------------------------------------------------------------------------

COMPLETIONS = ["so 3 + 4 = 7 #### 7", "#### 7.00", "#### $7", "I think 7", "#### 8 but really 7", "####7",
               "#### 1,000", "nothing", "#### 6 #### 7", "#### -3", "", "7 #### seven"]


@pytest.mark.parametrize("completion", COMPLETIONS)
@pytest.mark.parametrize("answer", ["7", "1000", "-3"])
@pytest.mark.parametrize("format_score", [0.0, 0.1])
def test_reward_matches_the_trl_engine(completion, answer, format_score):
    got = compute_score("srdd/arithmetic", completion, answer, {"split": "train", "index": 0},
                        format_score=format_score)
    assert got == {"score": training_reward(completion, answer, format_score),
                   "acc": strict_reward(completion, answer), "acc_flexible": flexible_reward(completion, answer)}


# --- against verl's real code (only where verl is installed) -------------------------------------------

@verl_only
def test_patch_targets_exist_in_verl():
    from verl.checkpoint_engine import base
    from verl.trainer.ppo.v1 import trainer_base, trainer_sync
    from verl.workers.engine.fsdp import transformer_impl

    build = ast.parse(textwrap.dedent(inspect.getsource(transformer_impl.FSDPEngine._build_model_optimizer)))
    top_level = [ast.unparse(node.value.func) for node in build.body[0].body
                 if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)]
    assert "self._build_fsdp_module" in top_level  # not under `if self._is_lora`: every engine calls it
    assert callable(base.CheckpointEngineManager.update_weights.__wrapped__) and callable(base.auto_await)
    assert all(callable(getattr(trainer_base.PPOTrainer, n)) for n in ("on_validate_begin", "on_validate_end", "init"))
    assert "on_validate_begin" not in vars(trainer_sync.PPOTrainerSync)  # the sync trainer inherits our hooks
    # vLLM is GPU-only (its package __init__ imports vllm): read the worker extension's source instead
    root = Path(importlib.util.find_spec("verl").submodule_search_locations[0])
    tree = ast.parse((root / "workers" / "rollout" / "vllm_rollout" / "utils.py").read_text())
    ext = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "vLLMColocateWorkerExtension")
    methods = {n.name: n for n in ext.body if isinstance(n, ast.FunctionDef)}
    assert {"update_weights_from_ipc", "update_verl_delta_weights"} <= set(methods)
    assert "model_runner.model" in ast.unparse(methods["update_weights_from_ipc"])


@verl_only
def test_verl_build_fsdp_module_quantizes_through_the_plugin(tiny_model_dir, tmp_path):
    """verl imports the plugin itself (VERL_USE_EXTERNAL_MODULES); its real _build_lora_module runs on CPU, and
    the patched _build_fsdp_module quantizes the PEFT model before verl's own FSDP code (which needs a device
    mesh this stand-in engine lacks, so it stops there)."""
    _settings(tmp_path).write(tmp_path / "s.json")
    r = _python(f"""
        from types import SimpleNamespace
        from verl.workers.engine.fsdp.transformer_impl import FSDPEngine
        from srdd.models import load_causal_lm
        from srdd.qlinear import QuantLinear

        engine = FSDPEngine.__new__(FSDPEngine)
        engine.model_config = SimpleNamespace(model_type="language_model", lora_rank=4, lora_alpha=8,
                                              target_modules={LORA_TARGETS!r}, target_parameters=None,
                                              exclude_modules=None, lora_adapter_path=None, use_shm=False)
        model = engine._build_lora_module(load_causal_lm({str(tiny_model_dir)!r})[0])
        try:
            engine._build_fsdp_module(model)
        except AttributeError:  # verl's FSDP wrapping, past our hook
            pass
        print(type(model).__name__, sum(isinstance(m, QuantLinear) for m in model.modules()))
    """, VERL_USE_EXTERNAL_MODULES="rin_train.verl.plugin", **{SETTINGS_ENV: str(tmp_path / "s.json")})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines()[-1] == "PeftModelForCausalLM 21"
    assert "actor: quantized 21 linear modules" in r.stdout


@verl_only
def test_verl_trainer_pushes_noise_after_syncs_and_clears_it_for_validation(tmp_path):
    """verl's real CheckpointEngineManager.update_weights and PPOTrainer hooks, patched, against Ray actors that
    record the collective_rpc calls a vLLM server would forward to its workers."""
    _settings(tmp_path).write(tmp_path / "s.json")
    r = _python("""
        import ray
        from types import SimpleNamespace
        from verl.checkpoint_engine.base import CheckpointEngineManager
        from verl.trainer.ppo.v1.trainer_base import PPOTrainer
        from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

        @ray.remote
        class Server:  # records what vLLMHttpServer.collective_rpc would run on its workers
            def __init__(self):
                self.calls = []
            def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
                self.calls.append((method, kwargs))
            def clear_kv_cache(self):  # vLLMHttpServer: engine.reset_prefix_cache
                self.calls.append(("clear_kv_cache", None))
            def seen(self):
                return self.calls

        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
        servers = [Server.remote(), Server.remote()]
        manager = CheckpointEngineManager.__new__(CheckpointEngineManager)
        manager.backend = "naive"
        manager.actor_wg = SimpleNamespace(update_weights=lambda global_steps, mode: [ray.put(None)])
        manager.replicas = [SimpleNamespace(servers=servers[:1]), SimpleNamespace(servers=servers[1:])]
        trainer = PPOTrainerSync.__new__(PPOTrainerSync)
        trainer.checkpoint_manager = manager

        manager.update_weights(0)        # on_init_end
        trainer.on_validate_begin()      # val_before_train
        manager.update_weights()         # a re-sync inside validation
        trainer.on_validate_end()
        manager.update_weights(1)        # on_step_end of step 1
        calls = ray.get(servers[0].seen.remote())
        print([v["version"] for m, v in calls if m == "srdd_set_noise"])
        print(all(m == ("srdd_set_noise", "clear_kv_cache")[i % 2] for i, (m, _) in enumerate(calls)))
        print(ray.get(servers[0].seen.remote()) == ray.get(servers[1].seen.remote()))

        class Overriding(PPOTrainerSync):
            def on_validate_begin(self):
                pass
        try:
            Overriding.__new__(Overriding).init()
        except RuntimeError as exc:
            print("refused:", exc)
    """, VERL_USE_EXTERNAL_MODULES="rin_train.verl.plugin", **{SETTINGS_ENV: str(tmp_path / "s.json")})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert lines[-4] == "[0, None, None, 0, 1]" and lines[-3] == "True"  # each noise call, then a cache reset
    assert lines[-2] == "True"
    assert lines[-1].startswith("refused: srdd verl plugin: Overriding overrides ['on_validate_begin']")
