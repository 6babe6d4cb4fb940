"""The verl 0.9.1 command for a run config: `python -m verl.trainer.main_ppo` + Hydra overrides.

One override per config field that matters, in Hydra's override grammar
(calibrate.suite.hydra_value, the same writer the experiment suite uses), so
every value parses back to what the config says. Mapping (TRL engine -> verl):

    grpo.steps               trainer.total_training_steps (+ enough epochs to reach it)
    grpo.num_generations     actor_rollout_ref.rollout.n (and GRPO groups: algorithm.adv_estimator=grpo)
    grpo.batch_size          data.train_batch_size = batch_size / num_generations prompts, one
                             optimizer step per training step (ppo_mini_batch_size = the same, ppo_epochs 1)
    grpo.max_prompt_length   data.max_prompt_length      grpo.max_completion_length  data.max_response_length
    grpo.learning_rate       actor.optim.lr (weight decay 0, as TRL)
    grpo.temperature         rollout.temperature         grpo.beta   actor.use_kl_loss / kl_loss_coef (low_var_kl)
    grpo.save_every          trainer.save_freq           eval.every  trainer.test_freq (+ step 0, + final step)
    lora.r/alpha/targets     actor_rollout_ref.model.lora_rank / lora_alpha / target_modules
                             (lora.r 0: full fine-tuning, every weight trained under the STE)
    task.format_score        reward.custom_reward_function.reward_kwargs.format_score
    seed                     data.seed, rollout.seed

Fixed: the vLLM rollout runs eagerly (our hooks), greedy validation, the sync
v1 trainer with the naive (colocated) weight sync, logger [console, file],
checkpoints and every validation's samples (trainer.validation_data_dir: the per-problem
outcomes, rin_train.verl.generations) in the run directory. Cluster layout (GPUs per node, nodes, tensor
parallelism, memory) is not part of a run config: the script forwards its own
arguments to verl after ours, and Hydra lets the last value of a key win.

What the script may not forward: an argument that changes (or replaces a parent of) a key our overrides
set, other than LAYOUT_KEYS. run.json records the run config those keys come from, and the plugin's
settings were written from it, so `bash verl_command.sh actor_rollout_ref.model.lora_rank=0` would train
all weights under a run.json that says LoRA r=32 (a full fine-tuning run is `--set lora.r=0`, recorded).
The script refuses it before verl starts: a message naming the key, exit 2, nothing written.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path

from calibrate.suite import hydra_value
from rin_train.run_config import RunConfig
from rin_train.verl.data import TaskFiles
from rin_train.verl.settings import SETTINGS_ENV

PLUGIN_MODULE = "rin_train.verl.plugin"
REWARD_FILE = Path(__file__).with_name("reward.py")
ENTRY = "verl.trainer.main_ppo"
LAYOUT_KEYS = ("trainer.nnodes", "trainer.n_gpus_per_node", "actor_rollout_ref.rollout.tensor_model_parallel_size",
               "actor_rollout_ref.actor.use_dynamic_bsz")
"""Keys our command sets that an extra argument may change: the cluster's layout and memory, which no run
config holds (tensor parallelism: compare runs at one size, see README)."""


@dataclass(frozen=True)
class VerlPaths:
    """Absolute paths the command names (Ray workers do not share the caller's working directory)."""

    model: Path
    data: TaskFiles
    settings: Path
    file_logger: Path
    checkpoints: Path
    generations: Path
    """trainer.validation_data_dir: one JSONL file of samples per validation (rin_train.verl.generations)."""


def environment(paths: VerlPaths) -> dict[str, str]:
    """What every verl process needs in its environment: the plugin, its settings, the JSONL logger path."""
    return {"VERL_USE_EXTERNAL_MODULES": PLUGIN_MODULE, SETTINGS_ENV: str(paths.settings),
            "VERL_FILE_LOGGER_PATH": str(paths.file_logger)}


def total_epochs(cfg: RunConfig, train_rows: int) -> int:
    """Epochs that cover grpo.steps, plus one: verl may drop a few more overlong prompts than we counted."""
    steps_per_epoch = train_rows // (cfg.grpo.batch_size // cfg.grpo.num_generations)
    return math.ceil(cfg.grpo.steps / steps_per_epoch) + 1


def override_pairs(cfg: RunConfig, paths: VerlPaths, *, n_gpus: int) -> list[tuple[str, object]]:
    g, lora = cfg.grpo, cfg.lora
    prompts = g.batch_size // g.num_generations
    actor, rollout = "actor_rollout_ref.actor", "actor_rollout_ref.rollout"
    return [
        ("algorithm.adv_estimator", "grpo"),
        ("algorithm.use_kl_in_reward", False),
        ("data.train_files", str(paths.data.train)),
        ("data.val_files", str(paths.data.test)),
        ("data.train_batch_size", prompts),
        ("data.max_prompt_length", g.max_prompt_length),
        ("data.max_response_length", g.max_completion_length),
        ("data.filter_overlong_prompts", True),
        ("data.truncation", "error"),
        ("data.seed", cfg.seed),
        ("actor_rollout_ref.model.path", str(paths.model)),
        ("actor_rollout_ref.model.external_lib", PLUGIN_MODULE),
        ("actor_rollout_ref.model.lora_rank", lora.r),
        ("actor_rollout_ref.model.lora_alpha", lora.alpha),
        ("actor_rollout_ref.model.target_modules", list(lora.target_modules)),
        (f"{actor}.optim.lr", g.learning_rate),
        (f"{actor}.optim.weight_decay", 0.0),
        (f"{actor}.ppo_mini_batch_size", prompts),
        (f"{actor}.ppo_epochs", 1),
        (f"{actor}.use_dynamic_bsz", True),
        (f"{actor}.use_kl_loss", g.beta > 0),
        (f"{actor}.kl_loss_coef", g.beta),
        (f"{actor}.kl_loss_type", "low_var_kl"),
        (f"{actor}.entropy_coeff", 0),
        (f"{rollout}.name", "vllm"),
        (f"{rollout}.n", g.num_generations),
        (f"{rollout}.temperature", g.temperature),
        (f"{rollout}.enforce_eager", True),
        (f"{rollout}.tensor_model_parallel_size", 1),
        (f"{rollout}.seed", cfg.seed),
        (f"{rollout}.checkpoint_engine.backend", "naive"),
        (f"{rollout}.val_kwargs.do_sample", False),
        (f"{rollout}.val_kwargs.temperature", 0),
        (f"{rollout}.val_kwargs.n", 1),
        ("reward.custom_reward_function.path", str(REWARD_FILE)),
        ("reward.custom_reward_function.name", "compute_score"),
        ("+reward.custom_reward_function.reward_kwargs", {"format_score": cfg.task.format_score}),
        ("trainer.total_training_steps", g.steps),
        ("trainer.total_epochs", total_epochs(cfg, paths.data.train_rows)),
        ("trainer.test_freq", cfg.eval.every),
        ("trainer.val_before_train", True),
        ("trainer.save_freq", g.save_every),
        ("trainer.resume_mode", "auto"),
        ("trainer.default_local_dir", str(paths.checkpoints)),
        ("trainer.validation_data_dir", str(paths.generations)),
        ("trainer.logger", ["console", "file"]),
        ("trainer.project_name", "srdd"),
        ("trainer.experiment_name", cfg.name),
        ("trainer.nnodes", 1),
        ("trainer.n_gpus_per_node", n_gpus),
        ("trainer.use_v1", True),
        ("trainer.v1.trainer_mode", "sync"),
        ("+ray_kwargs.ray_init.runtime_env.env_vars", environment(paths)),
    ]


def overrides(cfg: RunConfig, paths: VerlPaths, *, n_gpus: int) -> list[str]:
    return [f"{key}={hydra_value(value)}" for key, value in override_pairs(cfg, paths, n_gpus=n_gpus)]


def owned_keys(cfg: RunConfig, paths: VerlPaths, *, n_gpus: int) -> list[str]:
    """The keys an extra argument may not change: ours (without Hydra's '+'), less LAYOUT_KEYS."""
    keys = [key.lstrip("+") for key, _ in override_pairs(cfg, paths, n_gpus=n_gpus)]
    return [key for key in keys if key not in LAYOUT_KEYS]


def _guard(owned: list[str]) -> list[str]:
    """Bash lines that refuse an argument changing an owned key, its subkey or a parent of it (Hydra's
    key=, +key=, ++key=, ~key forms), before verl starts."""
    message = ("verl_command.sh: refused '$arg': it changes $k, which srdd set from the run config that run.json "
               "records, so run.json would no longer say what ran; prepare another run with the change in its config "
               "(srdd train ... --set KEY=VALUE; full fine-tuning: --set lora.r=0). Extra arguments may set "
               f"{', '.join(LAYOUT_KEYS)} and keys srdd does not set.")
    return ["# Keys set from the run config (run.json records it): an extra argument may not change them.",
            "owned=(", *(f"    {key}" for key in owned), ")",
            'for arg in "$@"; do',
            "    key=${arg%%=*}; key=${key#\\~}; key=${key#+}; key=${key#+}",
            '    for k in "${owned[@]}"; do',
            '        if [[ $key == "$k" || $key == "$k".* || $k == "$key".* ]]; then',
            f'            echo "{message}" >&2',
            "            exit 2",
            "        fi",
            "    done",
            "done"]


def script(cfg: RunConfig, paths: VerlPaths, run_dir: Path, *, n_gpus: int, header: str) -> str:
    """verl_command.sh: exports the environment, then execs verl with our overrides and the caller's."""
    lines = ["#!/usr/bin/env bash", *(f"# {line}" if line else "#" for line in header.splitlines()),
             "#", "# Run it on a GPU node with verl==0.9.1 and vLLM installed (arguments are extra Hydra overrides;",
             "# the last value of a key wins, e.g. trainer.n_gpus_per_node=8):",
             f"#     bash {shlex.quote(str(run_dir / 'verl_command.sh'))} [KEY=VALUE ...]",
             "# or let srdd run it and turn its logs into metrics.jsonl and run.json:",
             f"#     srdd train --resume --launch --out {shlex.quote(str(run_dir))}",
             "set -euo pipefail"]
    lines += _guard(owned_keys(cfg, paths, n_gpus=n_gpus))
    lines += [f"export {k}={shlex.quote(v)}" for k, v in environment(paths).items()]
    lines.append(f'exec "${{PYTHON:-python3}}" -m {ENTRY} \\')
    lines += [f"    {shlex.quote(o)} \\" for o in overrides(cfg, paths, n_gpus=n_gpus)]
    lines.append('    "$@"')
    return "\n".join(lines) + "\n"
