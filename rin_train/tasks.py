"""Train/test problems: the built-in deterministic set or GSM8K files the user supplies."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from srdd.errors import SrddError
from srdd.mathdata import generate_problems
from rin_train.run_config import TaskConfig

INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'


@dataclass(frozen=True)
class Example:
    question: str
    answer: str

    def messages(self) -> list[dict]:
        return [{"role": "user", "content": f"{self.question} {INSTRUCTION}"}]


def _gsm8k_answer(text: str) -> str:
    match = re.search(r"####\s*(-?[\d,\.]+)", str(text))
    return (match.group(1) if match else str(text)).replace(",", "").strip()


def _read_file(path: Path) -> list[Example]:
    if not path.is_file():
        raise SrddError(f"task file {path} does not exist")
    if path.suffix == ".parquet":
        import pandas as pd

        frame = pd.read_parquet(path)
        if "prompt" not in frame.columns or "reward_model" not in frame.columns:
            raise SrddError(f"{path}: expected verl's GSM8K layout (columns prompt, reward_model)")
        out = []
        for prompt, reward in zip(frame["prompt"], frame["reward_model"]):
            content = prompt if isinstance(prompt, str) else list(prompt)[-1]["content"]
            out.append(Example(content.replace(INSTRUCTION, "").strip(), str(reward["ground_truth"])))
        return out
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out.append(Example(rec["question"], _gsm8k_answer(rec["answer"])))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise SrddError(f"{path}:{i}: expected JSON with 'question' and 'answer' ({exc})") from None
    return out


def load_task(cfg: TaskConfig, seed: int) -> tuple[list[Example], list[Example]]:
    if cfg.name == "arithmetic":
        train = [Example(p.question, str(p.answer)) for p in generate_problems(cfg.train_size, seed=seed)]
        test = [Example(p.question, str(p.answer)) for p in generate_problems(cfg.test_size, seed=0, split="test")]
        return train, test
    train, test = _read_file(Path(cfg.train_file)), _read_file(Path(cfg.test_file))
    if not train or not test:
        raise SrddError("task files hold no examples")
    return train[: cfg.train_size], test[: cfg.test_size]
