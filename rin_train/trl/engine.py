"""Single-machine GRPO with TRL (1.16), driven by our callbacks for noise, validation and logging.

Without vLLM, TRL generates and trains with the same model, so rollout-only
noise wraps the generation call: `NoisyGRPOTrainer._generate_single_turn`
perturbs (restore-then-perturb from the fp32 master copy), generates, and
restores before returning. The old/ref log-probs, the policy-gradient
forward/backward and every validation therefore see clean weights (DESIGN.md
§7; a callback at step begin would also perturb the loss). The rollout
prefills each distinct prompt once, where TRL would prefill all its
num_generations copies (rin_train.shared_prefill: the same tokens bit for bit), and makes each
decode step's sampling draws a step ahead, on the core decoding leaves idle (rin_train.prefetched_draws).

`RunLogger` appends one metrics.jsonl line per optimizer step:
    step, sigma (scheduled), sigma_layers (nominal: achieved std per layer, read back),
    sigma_layers_effective (what the quantized GEMMs see per layer, rin_train.effective),
    reward_mean/reward_std (the training reward: strict, plus task.format_score for a well-formed
    wrong answer), rollout_accuracy/rollout_accuracy_flexible (of the noisy sampled rollouts),
    zero_variance_groups/groups (lesson 9), loss, completion_mean_length,
    accuracy/accuracy_flexible/eval_samples/eval_quant/eval_lora (null unless validated; LoRA "separate"),
    eval_merged (final step only: the same with the LoRA merged and re-quantized, eval_lora "merged"),
    step_s, wall_s.
Validation is greedy, noise-free, under the training quantization, at step 0,
every `eval.every` steps and always at the final step (on `eval.final_samples` problems when set,
else on the same `eval.samples` as the others). Each validation also appends its
per-problem outcomes to eval_outcomes.jsonl (rin_train.outcomes) as soon as it ends. On --resume
a step that is already logged is neither re-logged nor re-validated; a step validated but not yet
logged when the run died is validated again, and its later outcome line is the one that counts.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import torch

from rin_train.evaluate import evaluate
from rin_train.lora_merge import lora_served
from rin_train.outcomes import OutcomeLog
from rin_train.prefetched_draws import prefetched_draws
from rin_train.rewards import completion_text, flexible_reward, strict_reward, training_reward
from rin_train.rundir import RunDir
from rin_train.run_config import RunConfig
from rin_train.shared_prefill import shared_prefill
from rin_train.step0 import Step0Cache
from rin_train.tasks import Example
from rin_train.trl.lean_logprob_grad import install as install_lean_logprob_grad
from rin_train.trl.parallel_passes import ParallelPasses, wait_for_previous_pass
from rin_train.trl.shared_prompt import shareable, shared_prompt_logps
from rin_train.unrepeated_kv import install as install_unrepeated_kv
from rin_train.watchdog import Watchdog
from srdd.memory import DYNAMIC_MMAP_THRESHOLD_MAX, mapped_allocations, release_free_memory, update_allocations_mapped
from srdd.threads import small_gemm_threads, torch_threads, update_workers

try:  # the module imports without TRL (run dirs, configs and tests of them stay importable)
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
except ImportError as _exc:  # pragma: no cover - trl is a hard dependency in pyproject
    raise ImportError(f"rin_train's TRL engine needs trl>=1.16 ({_exc})") from _exc


install_lean_logprob_grad()  # TRL's CPU log-prob backward: the same bits, its tiles in 3.25 buffers instead of 8
install_unrepeated_kv()  # an update's repeated keys and values saved unrepeated: the same bits, a third of the bytes


class NoisyGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose rollouts, and only its rollouts, see the noisy weights."""

    def __init__(self, *args, injector=None, total_steps: int, shared_prompt: bool = False, **kwargs) -> None:
        self.injector = injector
        self.total_steps = total_steps
        self.shared_prompt = shared_prompt
        self.last_noise: dict = {"sigma": None, "sigma_layers": None, "sigma_layers_effective": None}
        self.passes = ParallelPasses(self)
        self.pass_workers = 1
        self.mapped_update = update_allocations_mapped()
        self.threads = torch.get_num_threads()
        """torch's threads outside the update passes (training_step may run those on fewer)."""
        super().__init__(*args, **kwargs)

    def _send_telemetry(self) -> None:
        """A local run reports nothing to the hub: TRL's usage ping would make DNS lookups and an HTTP
        request at run time whenever HF_HUB_OFFLINE is unset, for a model that never left this machine."""

    def _generate_single_turn(self, *args, **kwargs):
        # each of the num_generations copies of a prompt is prefilled once; a rollout runs inside a training step,
        # but allocates its KV caches token by token: from the heap, also where the update's allocations are mapped
        heap = mapped_allocations(DYNAMIC_MMAP_THRESHOLD_MAX) if self.mapped_update else nullcontext()
        noisy = self.injector is not None and self.model.training
        noise = self.injector.applied(self.state.global_step, self.total_steps) if noisy else nullcontext()
        called_with = torch.get_num_threads()
        # the noise is written on all of the trainer's threads (a step's passes, where the rollout runs, may have
        # fewer), generation runs on the threads it was called with; sampling's random draws are made a step ahead
        with (heap, torch_threads(self.threads), noise as record, torch_threads(called_with),
              shared_prefill(self.model), prefetched_draws()):
            out = super()._generate_single_turn(*args, **kwargs)
            if noisy:  # read after the rollout: an RMSNorm target under sigma_basis effective is set on its first
                # forward
                self.last_noise = {"sigma": record.get("sigma"), "sigma_layers": self.injector.nominal_layers(),
                                   "sigma_layers_effective": self.injector.effective_layers()}
        release_free_memory()  # the rollout's KV caches and noise draws: the update starts from the live size
        return out

    def training_step(self, model, *args, **kwargs):
        """One pass's forward and backward (and, at a step's first pass, its rollout). With shared prompts the
        passes are small GEMMs: on srdd.threads.small_gemm_threads(), one where threads wait passively, and
        then srdd.threads.update_workers() of them side by side (rin_train.trl.parallel_passes)."""
        few_rows = self.shared_prompt and shareable(model)
        self.pass_workers = update_workers() if few_rows else 1
        threads = torch_threads(small_gemm_threads()) if few_rows else nullcontext()
        with threads, mapped_allocations() if self.mapped_update else nullcontext():
            failed = True
            try:
                out = super().training_step(model, *args, **kwargs)
                failed = False
                return out
            finally:
                self.passes.settle(failed)
                release_free_memory()  # the pass's freed activations (see compute_loss)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """A pass computed ahead replays its loss and gradients; a group's first pass starts the others."""
        params = [p for p in model.parameters() if p.requires_grad]
        replayed = self.passes.replay(self._step, params)
        if replayed is not None:
            return replayed
        self.passes.launch(model, self._step, self.pass_workers, params, num_items_in_batch)
        try:
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        finally:
            self.passes.leader_finished()
            # What a pass's forward and backward free lies between the activations still alive, in the heaps of
            # two passes side by side: holes that stay resident (0.8-1.5 GB of free heap at a demo run's peak),
            # which glibc trims only at a heap's top. Handed back at each forward's and each pass's end: 0.1-0.2 GB
            # off the demo's peak; a page used again faults in. Placement only: the bits do not change.
            release_free_memory()

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **inputs):
        """With grpo.shared_prompt, each distinct prompt of a pass runs once (rin_train.trl.shared_prompt);
        TRL's forward otherwise, and for whatever that module cannot share."""
        if (self.shared_prompt and not compute_aux_loss and not self.args.cast_lm_head_to_fp32
                and all(v is None for v in inputs.values())
                and shareable(model)):
            with self.accelerator.autocast():
                logps, entropies = shared_prompt_logps(model, input_ids, attention_mask, logits_to_keep,
                                                       temperature=self.temperature, entropy=compute_entropy,
                                                       batch_size=batch_size)
            out = logps, entropies, None
        else:
            out = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **inputs)
        wait_for_previous_pass()  # a pass run ahead logs its metrics after the pass before it
        return out


class RewardTracker:
    """The strict-answer reward TRL trains on; also scores flexibly and counts zero-variance groups.

    TRL lays completions out group by group (num_generations consecutive
    completions per prompt), so a group is a contiguous slice.
    """

    def __init__(self, num_generations: int, format_score: float = 0.0) -> None:
        self.num_generations = num_generations
        self.format_score = format_score
        self.__name__ = "strict_answer"
        self.reset()

    def reset(self) -> None:
        self.groups = 0
        self.zero_variance_groups = 0
        self.strict: list[float] = []
        self.flexible: list[float] = []

    def __call__(self, prompts, completions, answer, **kwargs) -> list[float]:
        texts = [completion_text(c) for c in completions]
        rewards = [training_reward(t, a, self.format_score) for t, a in zip(texts, answer)]
        self.strict += [strict_reward(t, a) for t, a in zip(texts, answer)]
        self.flexible += [flexible_reward(t, a) for t, a in zip(texts, answer)]
        for start in range(0, len(rewards), self.num_generations):
            group = rewards[start:start + self.num_generations]
            self.groups += 1
            self.zero_variance_groups += int(max(group) == min(group))
        return rewards

    def take(self) -> dict:
        mean = (lambda xs: sum(xs) / len(xs) if xs else None)
        out = {"zero_variance_groups": self.zero_variance_groups, "groups": self.groups,
               "rollout_accuracy": mean(self.strict), "rollout_accuracy_flexible": mean(self.flexible)}
        self.reset()
        return out


class RunLogger(TrainerCallback):
    """Validation at step 0 / every N / final step, one metrics line per step, watchdog beats."""

    def __init__(self, run: RunDir, cfg: RunConfig, tokenizer, test: list[Example], rewards: RewardTracker,
                 *, injector=None, watchdog: Watchdog | None = None, step0: Step0Cache | None = None) -> None:
        self.run, self.cfg, self.tokenizer, self.test = run, cfg, tokenizer, test
        self.rewards, self.injector, self.watchdog, self.step0 = rewards, injector, watchdog, step0
        self.intermediate = test[: cfg.eval.samples]
        self.outcomes = {len(problems): OutcomeLog.for_test_set(run, problems)
                         for problems in (self.intermediate, test)}
        records = run.logged_steps()
        self.logged = {r["step"] for r in records}
        self.validated = {r["step"] for r in records if r.get("accuracy") is not None}
        self.trainer: NoisyGRPOTrainer | None = None
        self.pending_eval: dict | None = None
        self.t0 = time.monotonic()
        self.step_t0 = self.t0
        self.zero_variance_streak = 0
        self.stop_reason: str | None = None

    def _beat(self, what: str) -> None:
        if self.watchdog is not None:
            self.watchdog.beat(what)

    def should_validate(self, step: int) -> bool:
        return step == 0 or step % self.cfg.eval.every == 0 or step == self.cfg.grpo.steps

    def validate(self, model, step: int) -> dict:
        """Validation of the policy as trained (LoRA beside the quantized base); at the final step also as
        deployed (LoRA merged into the weights and re-quantized), under `eval_merged`, on the final test set
        (with `eval.endpoint_only`, the deployed one alone)."""
        if self.injector is not None and getattr(self.injector, "perturbed", False):
            raise RuntimeError("validation would see noisy weights; the injector did not restore them")
        final = step == self.cfg.grpo.steps
        problems = self.test if final and not self.cfg.eval.endpoint_only else self.intermediate
        result = self._evaluate(model, step, "separate", problems)
        if final:
            with lora_served(model):
                merged = self._evaluate(model, step, "merged", self.test)
            result["eval_merged"] = merged
        return result

    def _evaluate(self, model, step: int, lora: str, problems: list[Example]) -> dict:
        self._beat(f"validation ({lora} LoRA) at step {step}")
        # the untrained policy, as trained: the same for every seed of the arm (rin_train.step0)
        shared = self.step0 if step == 0 and lora == "separate" else None
        result = None if shared is None else shared.load()
        if result is None:
            result = evaluate(model, self.tokenizer, problems, max_new_tokens=self.cfg.eval.max_new_tokens,
                              quant_label=self.cfg.quant_label, eval_lora=lora, batch_size=self.cfg.eval.batch_size,
                              heartbeat=lambda: self._beat(f"validation ({lora} LoRA) at step {step}"),
                              shared_prefix=self.cfg.eval.shared_prefix)
            if shared is not None:
                shared.store(result)
        self.outcomes[len(problems)].append(step, result, result.pop("per_problem"))
        reused = result.get("eval_reused_from")
        print(f"validation step {step}: accuracy {100 * result['accuracy']:.1f}% (flexible "
              f"{100 * result['accuracy_flexible']:.1f}%) on {result['eval_samples']} problems under "
              f"{result['eval_quant']}, LoRA {lora}, greedy, no noise"
              + (f" (run {reused['run']}'s, the same untrained policy)" if reused else ""), flush=True)
        self._beat(f"validation ({lora} LoRA) at step {step} done")
        release_free_memory()
        return result

    # --- callbacks -----------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.watchdog is not None:  # armed once training starts: loading models is not a step
            self.watchdog.start()
        if 0 not in self.logged:
            record = {"step": 0, "sigma": None, "sigma_layers": None, "sigma_layers_effective": None,
                      "reward_mean": None,
                      **self.validate(model, 0), "wall_s": round(time.monotonic() - self.t0, 3)}
            self.run.append_metrics(record)
            self.logged.add(0)
            self.validated.add(0)
        self.step_t0 = time.monotonic()

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_t0 = time.monotonic()
        self._beat(f"step {state.global_step + 1}")

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        self._beat(f"step {step} done")
        release_free_memory()  # the update's activations: the next phase starts from the live size
        if self.should_validate(step) and step not in self.validated:
            self.pending_eval = self.validate(model, step)

    def on_save(self, args, state, control, **kwargs):
        """Trainer has written checkpoint-N whole: mark it complete (what --resume trusts)."""
        self.run.mark_checkpoint(Path(args.output_dir) / f"checkpoint-{state.global_step}")

    def on_log(self, args, state, control, logs=None, **kwargs):
        step = state.global_step
        if logs is None or "train_runtime" in logs or step == 0:
            return
        stats = self.rewards.take()
        if step in self.logged:  # replayed after --resume: the first record stands
            self.pending_eval = None
            return
        noise = self.trainer.last_noise if self.trainer is not None else {}
        record = {"step": step, "sigma": noise.get("sigma"), "sigma_layers": noise.get("sigma_layers"),
                  "sigma_layers_effective": noise.get("sigma_layers_effective"),
                  "reward_mean": logs.get("reward"), "reward_std": logs.get("reward_std"), **stats,
                  "loss": logs.get("loss"), "completion_mean_length": logs.get("completions/mean_length"),
                  "accuracy": None, "accuracy_flexible": None, "eval_samples": None, "eval_quant": None,
                  "eval_lora": None,
                  "step_s": round(time.monotonic() - self.step_t0, 3),
                  "wall_s": round(time.monotonic() - self.t0, 3)}
        if self.pending_eval is not None:
            record.update(self.pending_eval)
            self.validated.add(step)
            self.pending_eval = None
        self.run.append_metrics(record)
        self.logged.add(step)
        self._zero_variance(step, stats, control)
        sigma = "off" if record["sigma"] is None else f"{record['sigma']:.3g}"
        reward = "n/a" if record["reward_mean"] is None else f"{record['reward_mean']:.3f}"
        dead = (f" - no learning signal: every group has zero reward variance ({self.zero_variance_streak} "
                "step(s) in a row)" if self.zero_variance_streak else "")
        effective = _mean(record["sigma_layers_effective"])
        if effective is not None:
            sigma += f" (nominal {_mean(record['sigma_layers']):.3g}, effective {effective:.3g} per layer)"
        print(f"step {step}/{self.cfg.grpo.steps}: sigma {sigma}, reward {reward}, zero-variance groups "
              f"{stats['zero_variance_groups']}/{stats['groups']}, {record['step_s']:.1f} s{dead}", flush=True)
        if self.stop_reason:
            print(self.stop_reason, flush=True)

    def _zero_variance(self, step: int, stats: dict, control) -> None:
        """Lesson 9: a step in which every group has one reward carries no signal; say so, maybe stop."""
        if not stats["groups"] or stats["zero_variance_groups"] < stats["groups"]:
            self.zero_variance_streak = 0
            return
        self.zero_variance_streak += 1
        limit = self.cfg.grpo.stop_after_zero_variance_steps
        if limit is not None and self.zero_variance_streak >= limit:
            self.stop_reason = (f"stopped at step {step}: {self.zero_variance_streak} consecutive steps in which "
                                "every reward group had zero variance (no learning signal; "
                                "grpo.stop_after_zero_variance_steps)")
            control.should_training_stop = True


def _mean(per_layer: dict | None) -> float | None:
    return sum(per_layer.values()) / len(per_layer) if per_layer else None


def build_dataset(examples: list[Example]):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": e.messages(), "answer": e.answer} for e in examples])


def grpo_args(cfg: RunConfig, output_dir: Path) -> GRPOConfig:
    g = cfg.grpo
    # Checkpointing activations is on by default in TRL and 2-4x slower on CPU (DESIGN.md §7);
    # transformers 5 renamed the flag, and the old name warns.
    renamed = "activation_checkpointing" in GRPOConfig.__dataclass_fields__
    no_ckpt = {"activation_checkpointing": False} if renamed else {"gradient_checkpointing": False}
    return GRPOConfig(
        output_dir=str(output_dir), max_steps=g.steps,
        # one generation of batch_size completions per optimizer step, consumed in accumulation_steps passes
        per_device_train_batch_size=g.batch_size // g.accumulation_steps,
        gradient_accumulation_steps=g.accumulation_steps, steps_per_generation=g.accumulation_steps,
        num_generations=g.num_generations,
        max_completion_length=g.max_completion_length, learning_rate=g.learning_rate,
        temperature=g.temperature, beta=g.beta, logging_steps=1, save_strategy="steps", save_steps=g.save_every,
        save_only_model=False, save_total_limit=2, use_cpu=True, bf16=False, fp16=False,
        **no_ckpt, report_to=[], seed=cfg.seed, data_seed=cfg.seed, disable_tqdm=True,
        dataloader_num_workers=0,
    )


def latest_checkpoint(run: RunDir) -> str | None:
    """The newest complete TRL checkpoint (RunDir.latest_checkpoint skips broken ones)."""
    found = run.latest_checkpoint()
    return None if found is None else str(found)


def train_grpo(model, tokenizer, cfg: RunConfig, run: RunDir, train: list[Example], test: list[Example], *,
               injector=None, resume: bool = False, watchdog: Watchdog | None = None,
               step0: Step0Cache | None = None) -> RunLogger:
    """Run GRPO to cfg.grpo.steps (or an early stop); returns the logger (stop_reason, validated steps)."""
    from transformers import PrinterCallback, ProgressCallback

    rewards = RewardTracker(cfg.grpo.num_generations, cfg.task.format_score)
    logger = RunLogger(run, cfg, tokenizer, test, rewards, injector=injector, watchdog=watchdog, step0=step0)
    trainer = NoisyGRPOTrainer(model=model, reward_funcs=[rewards], args=grpo_args(cfg, run.checkpoints),
                               train_dataset=build_dataset(train), processing_class=tokenizer,
                               callbacks=[logger], injector=injector, total_steps=cfg.grpo.steps,
                               shared_prompt=cfg.grpo.shared_prompt)
    for noisy in (PrinterCallback, ProgressCallback):  # our one line per step replaces them
        trainer.remove_callback(noisy)
    logger.trainer = trainer
    checkpoint = latest_checkpoint(run) if resume else None
    if resume:
        print(f"resuming from {checkpoint}" if checkpoint else "no checkpoint yet: restarting training from step 0 "
              "(steps already logged are kept and not logged again)", flush=True)
    trainer.train(resume_from_checkpoint=checkpoint)
    if injector is not None:
        injector.restore()
    return logger
