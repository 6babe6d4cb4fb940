"""Single-machine GRPO with TRL, driven by our callbacks for noise, evaluation and logging.

TRL generates and trains with the same model on CPU, so rollout-only noise
wraps the generation call (perturb -> generate -> restore); the policy-gradient
forward/backward and every validation see clean weights. Validation runs
greedy, noise-free, under the training quantization, at step 0, every
`eval.every` steps and always at the final step; each accuracy records the
quant mode it was measured under.
"""

from __future__ import annotations

import time

from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from rin_train.evaluate import evaluate
from rin_train.noise import NoiseInjector
from rin_train.rewards import strict_reward
from rin_train.rundir import RunDir
from rin_train.run_config import RunConfig
from rin_train.tasks import Example
from rin_train.watchdog import Watchdog


class NoisyGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose rollouts (and only its rollouts) see the noisy weights."""

    def __init__(self, *args, injector: NoiseInjector | None, total_steps: int, **kwargs) -> None:
        self.injector = injector
        self.total_steps = total_steps
        self.last_noise: dict = {"sigma": None, "sigma_layers": None}
        super().__init__(*args, **kwargs)

    def _generate_single_turn(self, *args, **kwargs):
        if self.injector is None:
            return super()._generate_single_turn(*args, **kwargs)
        with self.injector.applied(self.state.global_step, self.total_steps) as record:
            self.last_noise = record
            return super()._generate_single_turn(*args, **kwargs)


class GroupStats:
    """Reward function wrapper that counts zero-variance groups (all completions equally rewarded)."""

    def __init__(self, num_generations: int) -> None:
        self.num_generations = num_generations
        self.zero_variance_groups = 0
        self.groups = 0
        self.__name__ = "strict_answer"

    def __call__(self, prompts, completions, answer, **kwargs) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        rewards = [strict_reward(t, a) for t, a in zip(texts, answer)]
        for start in range(0, len(rewards), self.num_generations):
            group = rewards[start:start + self.num_generations]
            self.groups += 1
            self.zero_variance_groups += int(len(set(group)) == 1)
        return rewards

    def take(self) -> tuple[int, int]:
        out = (self.zero_variance_groups, self.groups)
        self.zero_variance_groups = self.groups = 0
        return out


class RunLogger(TrainerCallback):
    """Appends one metrics.jsonl line per step; evaluates at step 0, every N steps and at the end."""

    def __init__(self, run: RunDir, cfg: RunConfig, tokenizer, test: list[Example], quant_label: str,
                 group_stats: GroupStats, watchdog: Watchdog | None, already_logged: set[int]) -> None:
        self.run, self.cfg, self.tokenizer, self.test = run, cfg, tokenizer, test
        self.quant_label, self.group_stats, self.watchdog = quant_label, group_stats, watchdog
        self.logged = already_logged
        self.trainer: NoisyGRPOTrainer | None = None
        self.pending_eval: dict | None = None
        self.t0 = time.monotonic()
        self.final_validated = False

    def _evaluate(self, model, step: int) -> dict:
        result = evaluate(model, self.tokenizer, self.test, max_new_tokens=self.cfg.eval.max_new_tokens)
        if step == self.cfg.grpo.steps:
            self.final_validated = True
        return {**result, "eval_quant": self.quant_label}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if 0 not in self.logged:
            record = {"step": 0, "sigma": None, "sigma_layers": None, "reward_mean": None,
                      **self._evaluate(model, 0), "wall_s": 0.0}
            self.run.append_metrics(record)
            self.logged.add(0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.watchdog:
            self.watchdog.beat()
        step = state.global_step
        if step % self.cfg.eval.every == 0 or step == self.cfg.grpo.steps:
            self.pending_eval = self._evaluate(model, step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        step = state.global_step
        if step in self.logged or logs is None or "train_runtime" in logs:
            return
        zero, groups = self.group_stats.take()
        noise = self.trainer.last_noise if self.trainer else {}
        record = {"step": step, "sigma": noise.get("sigma"), "sigma_layers": noise.get("sigma_layers"),
                  "reward_mean": logs.get("reward"), "reward_std": logs.get("reward_std"),
                  "loss": logs.get("loss"), "zero_variance_groups": zero, "groups": groups,
                  "accuracy": None, "accuracy_flexible": None, "eval_quant": None,
                  "wall_s": round(time.monotonic() - self.t0, 3)}
        if self.pending_eval is not None:
            record.update(self.pending_eval)
            self.pending_eval = None
        if zero and zero == groups:
            print(f"step {step}: all {groups} reward groups have zero variance (no learning signal); continuing")
        self.run.append_metrics({k: v for k, v in record.items()})
        self.logged.add(step)


def build_dataset(tokenizer, examples: list[Example]) -> Dataset:
    return Dataset.from_list([{"prompt": e.messages(), "answer": e.answer} for e in examples])


def train_grpo(model, tokenizer, cfg: RunConfig, run: RunDir, train: list[Example], test: list[Example],
               injector: NoiseInjector | None, quant_label: str, *, resume: bool,
               watchdog: Watchdog | None) -> bool:
    """Runs GRPO; returns whether the final-step validation ran."""
    g = cfg.grpo
    args = GRPOConfig(
        output_dir=str(run.path / "checkpoints"), max_steps=g.steps, per_device_train_batch_size=g.batch_size,
        num_generations=g.num_generations, max_completion_length=g.max_completion_length,
        learning_rate=g.learning_rate, temperature=g.temperature, beta=g.beta, logging_steps=1,
        save_steps=g.save_every, save_strategy="steps", use_cpu=True, bf16=False, fp16=False,
        gradient_checkpointing=False, report_to=[], seed=cfg.seed, disable_tqdm=False,
        save_only_model=False,
    )
    group_stats = GroupStats(g.num_generations)
    logged = {int(r["step"]) for r in run.logged_steps()}
    logger = RunLogger(run, cfg, tokenizer, test, quant_label, group_stats, watchdog, logged)
    trainer = NoisyGRPOTrainer(model=model, reward_funcs=[group_stats], args=args,
                               train_dataset=build_dataset(tokenizer, train), processing_class=tokenizer,
                               callbacks=[logger], injector=injector, total_steps=g.steps)
    logger.trainer = trainer
    checkpoint = _latest_checkpoint(run) if resume else None
    trainer.train(resume_from_checkpoint=checkpoint)
    if cfg.grpo.steps in logged:
        logger.final_validated = logger.final_validated or any(
            r.get("step") == cfg.grpo.steps and r.get("accuracy") is not None for r in run.logged_steps())
    return logger.final_validated


def _latest_checkpoint(run: RunDir) -> str | None:
    ckpts = sorted((run.path / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return str(ckpts[-1]) if ckpts else None


