"""Validation dumps written the way verl 0.9.1 writes them, for tests that have no verl (and for the stand-in verl).

The format is verl's, from verl-0.9.1's wheel, verl/trainer/ppo/v1/trainer_base.py:
- `PPOTrainer._validate`: each prompt's and response's token ids, left-padded with the pad token, decoded
  with `tokenizer.decode(ids, skip_special_tokens=True)`; samples keyed `{uuid4}_{session}_{index}` and
  sorted by that key (so the file's order is random with respect to the test set); reward_extra_infos_dict
  = {"reward": scores, then every key of the reward function's returned dict} | {"uid": keys};
- `PPOTrainer._write_generations` (run by `_dump_generations` in a background thread): the file
  `{validation_data_dir}/{global_steps}.jsonl`, opened "w"; base_data = input, output, gts, score, step,
  then each reward_extra_infos_dict list as long as the inputs (a key already there, "score", keeps its
  place and takes the new value); one `json.dumps(entry, ensure_ascii=False)` line per sample.
The prompt is rendered as verl's agent loop does (the chat template with the generation prompt, tokenized
by apply_chat_template itself), not through rin_train.tasks, so a test sees whether srdd's rendering
matches it.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Mapping, Sequence

from rin_train.verl.reward import compute_score


def verl_input(tokenizer, messages: Sequence[Mapping[str, str]], pad: int = 3) -> str:
    """A prompt as the dump's `input` shows it: chat template, left padding, decoded without special tokens."""
    ids = tokenizer.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True, tokenize=True)
    if isinstance(ids, Mapping):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return tokenizer.decode([tokenizer.pad_token_id] * pad + list(ids), skip_special_tokens=True)


def write_dump(directory: str | os.PathLike, step: int, samples: Sequence[tuple[str, str, str]], *,
               data_source: str = "openai/gsm8k", seed: int = 0) -> str:
    """Write `samples` ((input, output, ground truth) in test-set order) as verl's `{step}.jsonl`; its path."""
    rng = random.Random(seed * 1000 + step)
    keys = [f"{uuid.UUID(int=rng.getrandbits(128), version=4)}_0_0" for _ in samples]
    results = [compute_score(data_source, output, gts) for _, output, gts in samples]
    extra: dict[str, list] = {"reward": [r["score"] for r in results]}
    for r in results:
        for k, v in r.items():
            extra.setdefault(k, []).append(v)
    order = sorted(range(len(samples)), key=lambda i: keys[i].rsplit("_", 2)[0])
    base = {"input": [samples[i][0] for i in order], "output": [samples[i][1] for i in order],
            "gts": [samples[i][2] for i in order], "score": [results[i]["score"] for i in order],
            "step": [step] * len(samples)}
    for k, v in {**extra, "uid": keys}.items():
        base[k] = [v[i] for i in order]
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{step}.jsonl")
    with open(path, "w") as f:
        for i in range(len(samples)):
            f.write(json.dumps({k: v[i] for k, v in base.items()}, ensure_ascii=False) + "\n")
    return path
