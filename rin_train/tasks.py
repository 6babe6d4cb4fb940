"""Train/test problems: the built-in deterministic word problems, or GSM8K files the user supplies.

- `arithmetic`: `srdd.mathdata.generate_problems` (GSM8K-like templates, integer
  answers, train/test disjoint by construction) at `task.difficulty` (`multi_step`,
  `one_step` or `echo`), each question followed by `task.instruction`. The train set depends
  on the run's seed; the test set never does, so every run is validated on the same problems.
- `gsm8k`: verl's parquet layout (column `prompt` = chat list, column
  `reward_model` = {"ground_truth": ...}; the prompt is used exactly as verl
  would use it) or JSONL with `question` and `answer` (GSM8K's "... #### 72").

Every prompt asks for the final answer after "####": verl's GSM8K instruction by
default (the only one for gsm8k files, so prompts match what verl trains on).

A problem's id (`problem_ids`) is a hash of its prompt: neither generator has indices that survive
a change of test_size, file order or engine, but the prompt the model sees is the problem.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from srdd.errors import SrddError
from srdd.mathdata import generate_problems

INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'


@dataclass(frozen=True)
class Example:
    prompt: tuple[tuple[str, str], ...]
    """Chat messages as (role, content) pairs (hashable; see `messages`)."""
    answer: str

    @classmethod
    def from_question(cls, question: str, answer: str | int, instruction: str = INSTRUCTION) -> Example:
        return cls(((("user", f"{question.strip()} {instruction}"),)), str(answer))

    def messages(self) -> list[dict]:
        return [{"role": role, "content": content} for role, content in self.prompt]

    @property
    def question(self) -> str:
        return self.prompt[-1][1]


PROBLEM_ID_HEX = 16
"""64 bits of sha256: collisions are negligible across any test set this tool sees (~1e-11 at 10^4 problems)."""


def problem_ids(examples: list[Example]) -> list[str]:
    """Stable ids, one per example, unique within the list: the same prompt gets the same id in every run
    and engine; a prompt that repeats in the list gets "#2", "#3"... by order of appearance."""
    seen: dict[str, int] = {}
    ids = []
    for e in examples:
        digest = hashlib.sha256(json.dumps(e.prompt, ensure_ascii=False).encode("utf-8")).hexdigest()[:PROBLEM_ID_HEX]
        seen[digest] = seen.get(digest, 0) + 1
        ids.append(digest if seen[digest] == 1 else f"{digest}#{seen[digest]}")
    return ids


def gsm8k_answer(text: str) -> str:
    """The number after '####' in a GSM8K answer ('... #### 1,200' -> '1200'); the text itself otherwise."""
    match = re.search(r"####\s*(-?[\d,]*\.?\d+)", str(text))
    return (match.group(1) if match else str(text)).replace(",", "").strip()


def _chat(prompt, where: str) -> tuple[tuple[str, str], ...]:
    if isinstance(prompt, str):
        return (("user", prompt),)
    try:
        messages = tuple((str(m["role"]), str(m["content"])) for m in list(prompt))
    except (KeyError, TypeError) as exc:
        raise SrddError(f"{where}: prompt must be a string or a list of {{role, content}} messages ({exc})") from None
    if not messages:
        raise SrddError(f"{where}: empty prompt")
    return messages


def _read_parquet(path: Path) -> list[Example]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many kinds
        raise SrddError(f"{path}: cannot read parquet ({exc})") from None
    if "prompt" not in frame.columns or "reward_model" not in frame.columns:
        raise SrddError(f"{path}: expected verl's layout (columns 'prompt' and 'reward_model'), "
                        f"got columns {list(frame.columns)}")
    out = []
    for i, (prompt, reward) in enumerate(zip(frame["prompt"], frame["reward_model"])):
        where = f"{path} row {i}"
        try:
            truth = reward["ground_truth"]
        except (KeyError, TypeError, IndexError):
            raise SrddError(f"{where}: reward_model has no ground_truth") from None
        out.append(Example(_chat(prompt, where), gsm8k_answer(str(truth))))
    return out


def _read_jsonl(path: Path) -> list[Example]:
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out.append(Example.from_question(rec["question"], gsm8k_answer(rec["answer"])))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise SrddError(f"{path}:{i}: expected a JSON object with 'question' and 'answer' ({exc})") from None
    return out


def read_task_file(path: Path) -> list[Example]:
    path = Path(path)
    if not path.is_file():
        raise SrddError(f"task file {path} does not exist")
    examples = _read_parquet(path) if path.suffix == ".parquet" else _read_jsonl(path)
    if not examples:
        raise SrddError(f"task file {path} holds no examples")
    return examples


def load_task(cfg, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, test) for a TaskConfig."""
    if cfg.name == "arithmetic":
        try:
            train = generate_problems(cfg.train_size, seed=seed, split="train", difficulty=cfg.difficulty)
            test = generate_problems(cfg.test_size, seed=0, split="test", difficulty=cfg.difficulty)
        except ValueError as exc:  # a split with fewer distinct problems than asked for
            raise SrddError(f"task: {exc}") from None
        return ([Example.from_question(p.question, p.answer, cfg.instruction) for p in train],
                [Example.from_question(p.question, p.answer, cfg.instruction) for p in test])
    if cfg.name == "gsm8k":
        train, test = read_task_file(Path(cfg.train_file)), read_task_file(Path(cfg.test_file))
        return train[: cfg.train_size], test[: cfg.test_size]
    raise SrddError(f"unknown task {cfg.name!r}")


def drop_long_prompts(examples: list[Example], tokenizer, max_tokens: int, what: str) -> list[Example]:
    """Prompts over `max_tokens` tokens (chat template applied) are dropped, with a count printed."""
    kept = [e for e in examples if len(prompt_ids(tokenizer, e)) <= max_tokens]
    if len(kept) < len(examples):
        print(f"{what}: dropped {len(examples) - len(kept)} of {len(examples)} prompts longer than "
              f"grpo.max_prompt_length={max_tokens} tokens")
    if not kept:
        raise SrddError(f"{what}: every prompt is longer than grpo.max_prompt_length={max_tokens} tokens")
    return kept


def chat_tokenizer(model_dir: Path):
    """The tokenizer of a local model directory; refused without a chat template (GRPO prompts are chat messages)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise SrddError(f"cannot load a tokenizer from {model_dir}: {exc}") from None
    if tokenizer.chat_template is None:
        raise SrddError(f"model {model_dir} has no chat template; GRPO prompts are chat messages")
    return tokenizer


def prompt_text(tokenizer, example: Example) -> str:
    return tokenizer.apply_chat_template(example.messages(), tokenize=False, add_generation_prompt=True)


def prompt_ids(tokenizer, example: Example) -> list[int]:
    return tokenizer(prompt_text(tokenizer, example), add_special_tokens=False)["input_ids"]
