"""Our W4A4 fake quantization and rollout noise inside verl 0.9.1's own processes.

verl has no trainer callbacks. `srdd train --engine verl` makes verl import this
module in every process it starts:
- `VERL_USE_EXTERNAL_MODULES=rin_train.verl.plugin`: read by `verl/__init__.py`,
  so it reaches every process that imports verl, vLLM's worker subprocesses
  included (they import verl's worker extension class by name);
- `actor_rollout_ref.model.external_lib=rin_train.verl.plugin`: imported by
  `HFModelConfig.__post_init__` (verl/workers/config/model.py) in the trainer,
  the FSDP actor and the vLLM server;
- `SRDD_VERL_SETTINGS`: the run's rin_train.verl.settings file. Without it this
  module refuses to load: a verl run that silently trained unquantized would be
  worse than one that does not start.

Each patch below names the verl 0.9.1 function it wraps and is installed when
that module is imported (rin_train.post_import). What the patches install lives
in rin_train.verl.hooks, which the tests exercise without verl:

1. verl/workers/engine/fsdp/transformer_impl.py `FSDPEngine._build_fsdp_module`:
   the actor's HF model right before FSDP wraps it (after PEFT when lora_rank > 0,
   the plain model for full fine-tuning: `_build_model_optimizer` calls it for every
   engine, `_build_lora_module` only under LoRA) gets srdd.qlinear's fake
   quantization (`install_on_actor`); the reference model, built the same way, too.
   `_build_model_optimizer` then refuses an engine that built its model without it
   (a subclass overriding `_build_fsdp_module`): it would train unquantized.
2. verl/workers/rollout/vllm_rollout/utils.py
   `vLLMColocateWorkerExtension.update_weights_from_ipc`, in each vLLM worker:
   restore the clean weights, let verl load the synced ones, then quantize the
   vLLM linear layers (first sync) or drop their cached quantized weights, and
   re-read the noise masters (`install_on_rollout`, `RolloutNoise`). vLLM must
   run with enforce_eager: CUDA graphs replay kernels captured before the weights
   or our GEMM change. A new worker method `srdd_set_noise(version)` (reached
   through vLLM's collective_rpc) sets the noise. The delta weight path
   (`update_verl_delta_weights`) bypasses this hook and is refused.
3. verl/checkpoint_engine/base.py `CheckpointEngineManager.update_weights`, in the
   trainer: after every sync, every rollout server gets the noise of the synced
   weights version (the rollouts of the next step), or none during validation.
4. verl/trainer/ppo/v1/trainer_base.py `PPOTrainer.on_validate_begin/_end`: the
   rollout is clean while validating (lesson 5) and noisy again after;
   `PPOTrainer.init` refuses a trainer class that overrides these two hooks.
After every noise change (3 and 4) every rollout server resets vLLM's prefix cache
(`clear_kv_cache`), so no rollout reuses KV blocks computed under other weights.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from rin_train.post_import import when_imported
from rin_train.verl.hooks import (OutsidePool, RolloutNoise, TrainerNoise, install_on_actor, install_on_rollout,
                                  invalidate_rollout_quant)
from rin_train.verl.settings import SETTINGS_ENV, PluginSettings
from srdd.errors import SrddError

TARGETS = {
    "actor": "verl.workers.engine.fsdp.transformer_impl",
    "rollout": "verl.workers.rollout.vllm_rollout.utils",
    "sync": "verl.checkpoint_engine.base",
    "trainer": "verl.trainer.ppo.v1.trainer_base",
}
NOISE_METHOD = "srdd_set_noise"


def _load_settings() -> PluginSettings:
    path = os.environ.get(SETTINGS_ENV)
    if not path:
        raise SrddError(f"rin_train.verl.plugin was imported but ${SETTINGS_ENV} is not set; it must name the run's "
                        "verl/plugin_settings.json (srdd train --engine verl writes it and the command exports it)")
    return PluginSettings.read(path)


SETTINGS = _load_settings()
NOISE_ON = SETTINGS.noise_config().enabled
TRAINER_NOISE = TrainerNoise()


def _mark(fn):
    fn.__srdd_patched__ = True
    return fn


def _patched(fn) -> bool:
    return getattr(fn, "__srdd_patched__", False)


# --- 1. actor ---------------------------------------------------------------------------------------

def patch_actor(module) -> None:
    engine = module.FSDPEngine
    build_fsdp, build_all = engine._build_fsdp_module, engine._build_model_optimizer
    if _patched(build_fsdp):
        return

    @_mark
    def _build_fsdp_module(self, model):
        if self.model_config.model_type == "language_model":
            install_on_actor(model, SETTINGS)
            self._srdd_quantized = True
        return build_fsdp(self, model)

    @_mark
    def _build_model_optimizer(self):
        build_all(self)
        if self.model_config.model_type == "language_model" and not getattr(self, "_srdd_quantized", False):
            raise RuntimeError(f"srdd verl plugin: {type(self).__name__} built its model without "
                               "FSDPEngine._build_fsdp_module, so it would train unquantized; use "
                               "actor_rollout_ref.actor.strategy=fsdp or fsdp2")

    engine._build_fsdp_module, engine._build_model_optimizer = _build_fsdp_module, _build_model_optimizer


# --- 2. rollout (vLLM worker) ---------------------------------------------------------------------

@dataclass
class _WorkerState:
    quantized: bool
    noise: RolloutNoise | None


def _worker_state(worker) -> _WorkerState:
    state = getattr(worker, "_srdd_state", None)
    if state is None:
        if not worker.model_runner.vllm_config.model_config.enforce_eager:
            raise RuntimeError("srdd verl plugin: vLLM runs with CUDA graphs, which would replay kernels captured "
                               "before our quantization and noise; set actor_rollout_ref.rollout.enforce_eager=True")
        noise = (RolloutNoise(SETTINGS, rank=int(getattr(worker, "rank", 0)),
                              replica=os.environ.get("VERL_REPLICA_RANK", "0")) if NOISE_ON else None)
        state = worker._srdd_state = _WorkerState(quantized=False, noise=noise)
    return state


def _outside_pool(worker) -> OutsidePool | None:
    """The GPU memory the worker's vLLM pool leaves (None for a rollout off CUDA)."""
    import torch

    device = next(worker.model_runner.model.parameters()).device
    if device.type != "cuda":
        return None
    config = worker.model_runner.vllm_config
    return OutsidePool(torch.cuda.get_device_properties(device).total_memory,
                       config.cache_config.gpu_memory_utilization, config.scheduler_config.max_num_batched_tokens)


def _set_noise(self, version: int | None = None):
    """vLLM worker method: noise for weights `version`, or clean weights for None."""
    state = _worker_state(self)
    return state.noise.apply(version) if state.noise is not None else None


def _refuse_delta_sync(self, update_info: dict) -> None:
    raise RuntimeError("srdd verl plugin: the delta weight sync (checkpoint_engine backend delta_sharded) bypasses "
                       "the hook that re-quantizes and re-noises the rollout after each sync; use backend naive")


def patch_rollout(module) -> None:
    ext = module.vLLMColocateWorkerExtension
    original = ext.update_weights_from_ipc
    if _patched(original):
        return

    @_mark
    def update_weights_from_ipc(self, *args, **kwargs):
        state = _worker_state(self)
        if state.noise is not None:
            state.noise.before_sync()
        result = original(self, *args, **kwargs)
        model = self.model_runner.model
        if not state.quantized:
            install_on_rollout(model, SETTINGS, _outside_pool(self))
            state.quantized = True
        invalidate_rollout_quant(model)
        if state.noise is not None:
            state.noise.after_sync(model)
        return result

    ext.update_weights_from_ipc = update_weights_from_ipc
    ext.update_verl_delta_weights = _refuse_delta_sync
    setattr(ext, NOISE_METHOD, _set_noise)


# --- 3. weight sync (trainer) ----------------------------------------------------------------------

def _noise_calls(replicas, version: int | None) -> list:
    return [server.collective_rpc.remote(NOISE_METHOD, kwargs={"version": version})
            for replica in replicas for server in replica.servers]


def _cache_resets(replicas) -> list:
    """Every server drops its prefix cache (vLLMHttpServer.clear_kv_cache: engine.reset_prefix_cache), issued
    once the noise changed: KV blocks of prompt prefixes computed under the previous weights (clean ones from
    validation, or the last step's noise) would otherwise be reused by the next rollouts."""
    return [server.clear_kv_cache.remote() for replica in replicas for server in replica.servers]


def patch_sync(module) -> None:
    manager = module.CheckpointEngineManager
    if _patched(manager.update_weights):
        return
    original = manager.update_weights.__wrapped__  # the coroutine function under verl's @auto_await

    async def update_weights(self, global_steps: int | None = None):
        result = await original(self, global_steps)
        await asyncio.gather(*_noise_calls(self.replicas, TRAINER_NOISE.synced(global_steps)))
        await asyncio.gather(*_cache_resets(self.replicas))
        return result

    manager.update_weights = _mark(module.auto_await(update_weights))


# --- 4. validation (trainer) -----------------------------------------------------------------------

def patch_trainer(module) -> None:
    trainer = module.PPOTrainer
    if _patched(trainer.on_validate_begin):
        return
    begin, end, init = trainer.on_validate_begin, trainer.on_validate_end, trainer.init

    @_mark
    def on_validate_begin(self):
        import ray

        begin(self)
        replicas = self.checkpoint_manager.replicas
        ray.get(_noise_calls(replicas, TRAINER_NOISE.validation_begins()))
        ray.get(_cache_resets(replicas))

    @_mark
    def on_validate_end(self):
        import ray

        replicas = self.checkpoint_manager.replicas
        ray.get(_noise_calls(replicas, TRAINER_NOISE.validation_ends()))
        ray.get(_cache_resets(replicas))
        end(self)

    @_mark
    def init_(self):
        cls = type(self)
        overriding = [name for name in ("on_validate_begin", "on_validate_end")
                      if not _patched(getattr(cls, name))]
        if overriding:
            raise RuntimeError(f"srdd verl plugin: {cls.__name__} overrides {overriding}, so validation would see "
                               "the noisy rollout weights; use trainer.v1.trainer_mode=sync")
        return init(self)

    trainer.on_validate_begin, trainer.on_validate_end, trainer.init = on_validate_begin, on_validate_end, init_


when_imported(TARGETS["actor"], patch_actor)
when_imported(TARGETS["rollout"], patch_rollout)
if NOISE_ON:
    when_imported(TARGETS["sync"], patch_sync)
    when_imported(TARGETS["trainer"], patch_trainer)
