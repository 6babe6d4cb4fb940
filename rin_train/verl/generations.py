"""Per-problem outcomes of a verl run, from the validation samples verl dumps.

verl logs only aggregate accuracies, but with `trainer.validation_data_dir` set (rin_train.verl.command
sets it to the run's `verl/generations/`) every validation also writes each sample it generated. In
verl 0.9.1, `PPOTrainer._validate` (verl/trainer/ppo/v1/trainer_base.py: the v1 trainer our command
runs; `RayPPOTrainer._validate` in verl/trainer/ppo/ray_trainer.py writes the same format) passes them to
`_dump_generations`, whose background writer `_write_generations` writes
`{validation_data_dir}/{global_steps}.jsonl` (mode "w": a relaunch that validates a step again
replaces its file), one JSON object per sample:

    {"input": str, "output": str, "gts": ground truth, "score": float, "step": int,
     "reward": float, "acc": float, "acc_flexible": float, "uid": str}

`input` and `output` are the prompt's and the response's token ids decoded with
skip_special_tokens=True; the keys after `step` are the reward function's extra info
(rin_train.verl.reward returns score, acc and acc_flexible) and the sample's key. The lines are sorted
by that key, which starts with a random uuid4 per prompt: their order says nothing about the test set's.

How a sample is matched to its test problem (by prompt text): verl's single-turn agent loop builds a
text prompt's ids with `ContinuousTokenBuilder.build_initial_tokens` (verl/utils/tokenizer/
continuous_token.py: `tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
**data.apply_chat_template_kwargs)`; srdd sets no such kwargs). Every test problem is rendered the same
way through the model's own tokenizer (rin_train.tasks.prompt_ids: the chat template with the
generation prompt, tokenized; the same ids) and decoded with skip_special_tokens=True, and a
sample belongs to the problem whose rendering equals its `input` exactly and whose answer equals its
`gts` (read as rin_train.tasks.gsm8k_answer reads a ground truth). The same prompt twice in the test
set gets its samples in test-set order (the two are one problem with two ids). Refused: a sample that
matches no problem, a dump whose sample count differs from the test set's (val_kwargs.n > 1, prompts
verl dropped as overlong, failed sessions), and a test set in which two different prompts render
alike (a tokenizer that drops the words that tell them apart, like tiny-echo's 17-token vocabulary).

Each problem's strict and flexible correctness is computed with rin_train.rewards on the dumped
`output`, exactly as the TRL engine scores its own validations. verl's logged accuracy
(val-core/<source>/acc/mean@1: `process_validation_metrics`, verl/trainer/ppo/metric_utils.py, the mean
over prompts of each prompt's mean `acc`, a failed session counting 0) is the mean of the `acc` our reward
function returned for the response `NaiveRewardManager.run_single` decoded itself
(verl/experimental/reward_loop/reward_manager/naive.py: skip_special_tokens=True, cut at the response's
own length, where the dump decodes the padded response): the same text unless the pad token is not a
special token, so with one greedy sample per prompt the two agree sample by sample and in the mean; each sample's `acc`/`acc_flexible` and each step's logged accuracy are checked
against ours, and a disagreement (a dump that a relaunch replaced, another reward function) is refused.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from rin_train.outcomes import OutcomeLog
from rin_train.rewards import flexible_reward, strict_reward
from rin_train.rundir import RunDir
from rin_train.tasks import Example, gsm8k_answer, problem_ids, prompt_ids
from srdd.errors import SrddError

GENERATIONS = Path("verl") / "generations"
"""The run directory's trainer.validation_data_dir (relative to the run directory)."""
KINDS = ("strict", "flexible")
VERL_KEYS = {"strict": "acc", "flexible": "acc_flexible"}
"""Where a dumped sample holds verl's score of each kind (rin_train.verl.reward's extra info)."""


def dump_path(directory: Path, step: int) -> Path:
    """`_write_generations`' file for one validation: `{validation_data_dir}/{global_steps}.jsonl`."""
    return Path(directory) / f"{step}.jsonl"


@dataclass(frozen=True)
class Sample:
    """One dumped validation sample: what the matching and the scoring need of it."""

    input: str
    output: str
    answer: str
    """The ground truth as rin_train.tasks.gsm8k_answer reads it (the form an Example's answer has)."""
    verl: dict[str, float | None]
    """verl's strict/flexible score of this sample (its `acc`, `acc_flexible`), None where not dumped."""

    def __post_init__(self) -> None:
        if not isinstance(self.input, str) or not isinstance(self.output, str):
            raise ValueError("input and output must be strings")
        for kind, value in self.verl.items():
            if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value)):
                raise ValueError(f"{VERL_KEYS[kind]} is {value!r}, not a finite number")

    @classmethod
    def from_record(cls, record) -> Sample:
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        missing = [k for k in ("input", "output", "gts") if k not in record]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return cls(record["input"], record["output"], gsm8k_answer(str(record["gts"])),
                   {kind: record.get(key) for kind, key in VERL_KEYS.items()})


def read_dump(path: Path, step: int) -> list[Sample]:
    """The samples of one dump file, in file order; a malformed line, or one of another step, is refused."""
    if not path.is_file():
        raise SrddError(f"{path} does not exist: verl wrote no validation dump for step {step} "
                        "(trainer.validation_data_dir unset or pointing elsewhere?)")
    samples = []
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if isinstance(record, dict) and record.get("step", step) != step:
                raise ValueError(f"step is {record['step']!r}, the file is step {step}'s")
            samples.append(Sample.from_record(record))
        except (json.JSONDecodeError, ValueError) as exc:
            raise SrddError(f"{path}:{i}: not a verl validation dump line ({exc})") from None
    return samples


@dataclass(frozen=True)
class RenderedProblems:
    """A run's test problems with each prompt as verl's dump shows it; matches dumped samples to them."""

    examples: tuple[Example, ...]
    inputs: tuple[str, ...]
    """Each problem's prompt rendered and decoded as the dump's `input` (see the module docstring)."""

    def __post_init__(self) -> None:
        if not self.examples or len(self.inputs) != len(self.examples):
            raise ValueError(f"{len(self.inputs)} renderings for {len(self.examples)} test problems")
        first: dict[tuple[str, str], Example] = {}
        for example, key in zip(self.examples, self.keys):
            other = first.setdefault(key, example)
            if other.prompt != example.prompt:
                raise SrddError(f"two test problems render alike under the model's tokenizer ({key[0][:80]!r}, "
                                f"answer {key[1]}), so verl's dump cannot tell their samples apart: "
                                f"{other.question[:60]!r} and {example.question[:60]!r}")

    @classmethod
    def render(cls, examples: Sequence[Example], tokenizer) -> RenderedProblems:
        return cls(tuple(examples), tuple(tokenizer.decode(prompt_ids(tokenizer, e), skip_special_tokens=True)
                                          for e in examples))

    @property
    def keys(self) -> list[tuple[str, str]]:
        return [(text, e.answer) for text, e in zip(self.inputs, self.examples)]

    def assign(self, samples: Sequence[Sample], where: str) -> list[int]:
        """For each test problem, in test-set order, the index of its sample in `samples`."""
        if len(samples) != len(self.examples):
            raise SrddError(f"{where} holds {len(samples)} samples for a test set of {len(self.examples)} problems "
                            "(one greedy sample each: val_kwargs.n > 1, prompts verl dropped as overlong or failed "
                            "sessions make them differ)")
        free: dict[tuple[str, str], deque[int]] = defaultdict(deque)
        for i, key in enumerate(self.keys):
            free[key].append(i)
        order = [-1] * len(self.examples)
        for j, s in enumerate(samples):
            slots = free.get((s.input, s.answer))
            if not slots:
                what = "matches no test problem" if slots is None else "is one sample too many for its test problem"
                raise SrddError(f"{where}: sample {j + 1} (answer {s.answer}, input {s.input[:120]!r}) {what}: "
                                "a dump of another test set (data.val_files), model or chat template?")
            order[slots.popleft()] = j
        return order


def step_outcomes(directory: Path, step: int, test: RenderedProblems,
                  logged: Mapping[str, float | None]) -> dict[str, list[bool]]:
    """{"strict": [...], "flexible": [...]} of one validation in test-set order (OutcomeLog.append's input).

    `logged` holds the accuracies verl logged for this step by kind (None: not logged); their means must
    be ours, as each sample's verl scores must be ours."""
    path = dump_path(directory, step)
    samples = read_dump(path, step)
    ordered = [samples[j] for j in test.assign(samples, str(path))]
    scorers = {"strict": strict_reward, "flexible": flexible_reward}
    out = {kind: [scorers[kind](s.output, e.answer) == 1.0 for s, e in zip(ordered, test.examples)] for kind in KINDS}
    ids = problem_ids(list(test.examples))
    for kind, hits in out.items():
        for s, hit, problem in zip(ordered, hits, ids):
            theirs = s.verl[kind]
            if theirs is not None and float(theirs) != float(hit):
                raise SrddError(f"{path}: problem {problem}: rin_train.rewards scores its output {kind} {int(hit)}, "
                                f"verl's reward gave {VERL_KEYS[kind]} {theirs} (not rin_train.verl.reward, or a "
                                f"decoded output that is not the text the reward saw): {s.output[-120:]!r}")
        accuracy = logged.get(kind)
        if accuracy is not None and abs(sum(hits) / len(hits) - accuracy) > 1e-12:
            raise SrddError(f"{path}: {sum(hits)} of {len(hits)} problems right ({kind}), but verl logged accuracy "
                            f"{accuracy} for step {step}: this dump is not the validation that logged it (a relaunch "
                            "that validated the step again?)")
    return out


def outcomes_from_dumps(directory: Path, test: RenderedProblems,
                        logged: Mapping[int, Mapping[str, float | None]]) -> dict[int, dict[str, list[bool]]]:
    """Every validated step's per-problem outcomes (`logged`: step -> its logged accuracies), all or none:
    a step without its dump, or one refused above, is an error naming it."""
    return {step: step_outcomes(directory, step, test, logged[step]) for step in sorted(logged)}


def write_outcomes(run: RunDir, test: RenderedProblems, eval_quant: str,
                   outcomes: Mapping[int, Mapping[str, Sequence[bool]]]) -> None:
    """Append one eval_outcomes.jsonl line per step, in the TRL engine's format (rin_train.outcomes).

    eval_lora is "separate": verl validates the policy as it trains it (vLLM runs the LoRA adapters beside
    the quantized base; nothing is merged and re-quantized)."""
    log = OutcomeLog.for_test_set(run, test.examples)
    for step in sorted(outcomes):
        log.append(step, {"eval_quant": eval_quant, "eval_lora": "separate"}, outcomes[step])
