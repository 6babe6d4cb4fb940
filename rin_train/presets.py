"""Ready-made runs (the lowest layer of a config: a CONFIG file and --set override them).

- `smoke`: a tiny random Llama (3 layers, word-level tokenizer built locally by
  srdd.tiny, no download), 3 GRPO steps, noise on RMSNorm and linear weights,
  validations at steps 0, 2 and 3, both rescans. Seconds; what the tests run.
- `learn`: the same kind of tiny Llama, `tiny-echo` (17-token vocabulary, larger
  init; srdd.tiny), on `echo` problems ("Ava has 7 books. How many ..." -> 7):
  a random policy writes "#### <digit>" in some short completions, and 20 GRPO steps
  (64 completions each, LoRA lr 1e-2) turn that into greedy strict accuracy above 0.
  Light linear-weight noise (0.2 % -> 0.05 % nominal), validations at steps 0, 10, 20
  on 32 problems, both rescans. What end-to-end tests of train -> correlate run, so
  that the report's deltas and correlations are not all zeros, and the runs of the
  README's tiny study. Measured (2026-12-06; the model is one build for every seed, see
  srdd.tiny): 23 s of training, 38 s wall with OMP_NUM_THREADS=1 on 2 busy cores; with
  torch's default threads on a shared machine several times that (115 s measured) --
  there run it with OMP_NUM_THREADS=1. Strict accuracy 0 % at step 0, 9.4 % (seed 0)
  and 18.8 % (seed 1) at step 20 (the same merged).
  Why it looks like this: with Llama's init (0.02) a LoRA policy cannot move far from
  uniform (lm_head is not trained); without `format_score` 0.1 a correct
  "#### <digit>" is too rare (0-2 % of random completions, measured) for GRPO to
  build on in 20 steps; with it the format is learned first and the digit follows.
- `demo`: the embedded SmolLM2-135M-Instruct under NVFP4 W4A16 with decaying noise
  on every linear weight (1 % -> 0.1 % of its RMS, 4 stages), 36 GRPO steps
  (2 prompts x 8 completions at temperature 0.5) on the built-in one-step word
  problems, validations at steps 0, 12, 24 and 36 on 64 fixed test problems, rescans
  before and after. About 9 minutes on 2 CPU cores. Measured (seed 0, 2026-11-25):
  strict accuracy 15.6 % at step 0, 32.8 % at step 36 (flexible 23.4 % -> 35.9 %) --
  one seed, so a demonstration that the loop learns, not a finding. Version 2 updates
  in micro-batches of 4 completions, which cuts the update's
  activations and log-prob tiles by 4 (the loss is normalized over the step's tokens,
  so the update is the same up to float rounding); `demo@1`, the single 16-completion
  pass, is what the committed SmolLM2 study recorded and still runs. Version 3 (the current
  `demo`) also runs each pass's distinct prompts once and scores only the completion tokens
  (`grpo.shared_prompt`): about half the update's FLOPs, the same loss up to float rounding.

Why the demo looks like this (greedy strict / flexible accuracy of the untrained
policy, measured on this model; every number of a run carries its quant mode):
- The multi-step problems: 0 % strict even at full precision. `task.difficulty:
  one_step` is what a 135M model can solve at all.
- verl's "think step by step" instruction: <= 1.6 % strict on one-step problems at
  any precision (the model rambles past the token budget and never writes '####');
  `Write the answer as "#### <number>".` gets the format used.
- Quant mode, one-step problems, that instruction: MXFP4 W4A4 0 / 1.6 %, MXFP4 W4A16
  0 / 3.1 %, NVFP4 W4A4 4.7 / 9.4 %, NVFP4 W4A16 15.6 / 23.4 % (full precision
  3.1 / 39.1 %). MXFP4 leaves this small model babbling; NVFP4 weights (the mode
  upstream verl documents for NVFP4 QAT) keep it working.
- Noise and sampling decide whether GRPO has any signal: sampled rollouts at
  temperature 1.0 were never correct, even without noise; at 0.5 with noise of 1 %
  of the weight RMS about 8 % were, while 5 % (the previous demo) left 0 of 128
  correct at any temperature from 0.4 to 1.0, so every reward group was all zeros.
- No `format_score`: GRPO normalises rewards within each group, so 0.1 for a
  well-formed wrong answer weighs as much there as a correct answer would. A run
  with it (and 5 % noise, temperature 1.0, lr 2e-4) earned its reward only from the
  format and fell from 15.6 % to 0 % strict in 24 steps.
"""

from __future__ import annotations

import copy

from srdd.errors import SrddError

DEMO_MICRO_BATCH = 4
DEMO_INSTRUCTION = 'Write the answer as "#### <number>".'
ECHO_INSTRUCTION = "Answer #### and the number."

_FIRST: dict[str, dict] = {
    "smoke": {
        "model": "tiny",
        "task": {"train_size": 32, "test_size": 8},
        "quant": {"format": "mxfp4", "mode": "w4a4"},
        "lora": {"r": 4, "alpha": 8},
        "grpo": {"steps": 3, "num_generations": 2, "batch_size": 4, "max_prompt_length": 128,
                 "max_completion_length": 8, "learning_rate": 1.0e-3, "save_every": 2, "stall_timeout_s": 300.0},
        "eval": {"every": 2, "samples": 8, "max_new_tokens": 8},
        "noise": {"targets": ["rmsnorm", "linear"], "sigma_start": 0.05, "sigma_end": 0.01, "num_stages": 3},
        "scan": {"samples": 2, "max_tokens": 16},
    },
    "learn": {
        "model": "tiny-echo",
        "task": {"train_size": 64, "test_size": 32, "difficulty": "echo", "instruction": ECHO_INSTRUCTION,
                 "format_score": 0.1},
        "quant": {"format": "mxfp4", "mode": "w4a4"},
        "lora": {"r": 8, "alpha": 16},
        "grpo": {"steps": 20, "num_generations": 8, "batch_size": 64, "max_prompt_length": 64,
                 "max_completion_length": 4, "learning_rate": 1.0e-2, "save_every": 20, "stall_timeout_s": 300.0},
        "eval": {"every": 10, "samples": 32, "max_new_tokens": 4, "batch_size": 32},
        "noise": {"targets": ["linear"], "sigma_start": 0.002, "sigma_end": 0.0005, "num_stages": 3},
        "scan": {"samples": 2, "max_tokens": 16},
    },
    "demo": {
        "model": "smollm2",
        "task": {"train_size": 256, "test_size": 64, "difficulty": "one_step", "instruction": DEMO_INSTRUCTION},
        "quant": {"format": "nvfp4", "mode": "w4a16"},
        "lora": {"r": 16, "alpha": 32},
        "grpo": {"steps": 36, "num_generations": 8, "batch_size": 16, "max_prompt_length": 128,
                 "max_completion_length": 32, "learning_rate": 1.0e-4, "temperature": 0.5, "save_every": 12,
                 "stall_timeout_s": 900.0},
        "eval": {"every": 12, "samples": 64, "max_new_tokens": 32, "batch_size": 32},
        "noise": {"targets": ["linear"], "sigma_start": 0.01, "sigma_end": 0.001, "num_stages": 4},
        "scan": {"samples": 4, "max_tokens": 64},
    },
}


# A preset is never edited once runs used it: a changed default is a new version, appended. `NAME` is the
# latest version, `NAME@N` version N (1-based). A study records the version it ran (srdd study pins it),
# so that repeating its command keeps running the settings it recorded.
PRESET_VERSIONS: dict[str, tuple[dict, ...]] = {
    "smoke": (_FIRST["smoke"],),
    "learn": (_FIRST["learn"],),
    "demo": (
        _FIRST["demo"],  # version 1: what the committed SmolLM2 study ran (one pass of 16 completions per update)
        # version 2: the update in micro-batches of DEMO_MICRO_BATCH completions (gradients accumulated,
        # one rollout and one optimizer step per step; TRL's dapo loss is normalized over the whole step's
        # tokens, so only float rounding differs): the activations and log-prob tiles of a pass shrink
        # by that factor
        {**_FIRST["demo"], "grpo": {**_FIRST["demo"]["grpo"], "micro_batch_size": DEMO_MICRO_BATCH}},
        # version 3: each pass's distinct prompts run once and only completion tokens are scored
        # (grpo.shared_prompt, rin_train.trl.shared_prompt): about half the update's FLOPs, the same loss up to
        # float rounding
        {**_FIRST["demo"], "grpo": {**_FIRST["demo"]["grpo"], "micro_batch_size": DEMO_MICRO_BATCH,
                                    "shared_prompt": True}},
    ),
}
PRESETS: dict[str, dict] = {name: versions[-1] for name, versions in PRESET_VERSIONS.items()}
"""The latest version of each preset: what `--preset NAME` runs."""


def preset_names() -> list[str]:
    """Every name `--preset` accepts: NAME (the latest version) and NAME@N."""
    return [*PRESETS, *(f"{name}@{n}" for name, versions in PRESET_VERSIONS.items()
                        for n in range(1, len(versions) + 1))]


def _split(name: str) -> tuple[str, int | None]:
    base, at, version = name.partition("@")
    versions = PRESET_VERSIONS.get(base)
    if versions is None or (at and not (version.isdigit() and 1 <= int(version) <= len(versions))):
        raise SrddError(f"unknown preset {name!r}; choose from {', '.join(preset_names())}")
    return base, int(version) if at else None


def pinned(name: str | None, recorded: str | None = None) -> str | None:
    """`name` with its version made explicit: the version `recorded` pins when it is the same preset (a study
    repeating its command), else the latest. A recorded name without a version predates versions: version 1."""
    if name is None:
        return None
    base, version = _split(name)
    if version is not None:
        return name
    if recorded is not None:
        recorded_base, recorded_version = _split(recorded)
        if recorded_base == base:
            return f"{base}@{recorded_version or 1}"
    return f"{base}@{len(PRESET_VERSIONS[base])}"


def preset(name: str | None) -> dict:
    if name is None:
        return {}
    base, version = _split(name)
    versions = PRESET_VERSIONS[base]
    return copy.deepcopy(versions[(version or len(versions)) - 1])
