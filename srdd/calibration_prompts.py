"""Calibration samples: the built-in math problems or a user file, as token id lists.

GSM8K-style prompts go through the tokenizer's chat template (the model sees
them the way it will during RL); plain text is used verbatim. Files: JSONL
(`prompt`/`question` strings or chat-message lists, or verbatim `text`),
plain text (one sample per line), or a verl GSM8K parquet (`prompt` column of
chat messages).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from srdd.errors import SrddError
from srdd.mathdata import generate_problems

INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'


@dataclass(frozen=True)
class Sample:
    """Either chat messages (templated) or verbatim text."""

    messages: tuple[tuple[str, str], ...] | None = None
    text: str | None = None


def builtin_samples(n: int, seed: int) -> list[Sample]:
    return [Sample(messages=(("user", f"{p.question} {INSTRUCTION}"),))
            for p in generate_problems(n, seed=seed, split="train")]


def _messages(value, where: str) -> tuple[tuple[str, str], ...]:
    if isinstance(value, str):
        return (("user", value),)
    if isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("content"), str) and isinstance(m.get("role"), str)
        for m in value
    ):
        return tuple((m["role"], m["content"]) for m in value)
    raise SrddError(f"{where}: prompt must be a string or a list of {{role, content}} messages")


def _from_record(record, where: str) -> Sample:
    if not isinstance(record, dict):
        raise SrddError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in ("prompt", "question", "messages"):
        if key in record:
            return Sample(messages=_messages(record[key], f"{where}.{key}"))
    if isinstance(record.get("text"), str):
        return Sample(text=record["text"])
    raise SrddError(f"{where}: no 'prompt', 'question', 'messages' or 'text' field")


def load_file_samples(path: Path) -> list[Sample]:
    if not path.is_file():
        raise SrddError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for bad files
            raise SrddError(f"{path} is not a readable parquet file: {exc}") from exc
        if "prompt" not in frame.columns:
            raise SrddError(f"{path}: parquet has no 'prompt' column (verl GSM8K layout expected)")
        return [Sample(messages=_messages(list(p) if not isinstance(p, str) else p, f"{path}[{i}].prompt"))
                for i, p in enumerate(frame["prompt"])]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise SrddError(f"{path} is not UTF-8 text: {exc}") from exc
    if suffix in (".jsonl", ".json"):
        samples = []
        for i, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SrddError(f"{path}:{i}: invalid JSON ({exc.msg})") from exc
            samples.append(_from_record(record, f"{path}:{i}"))
        return samples
    return [Sample(text=line) for line in lines if line.strip()]


def load_samples(data: str | None, samples: int, seed: int) -> list[Sample]:
    if samples < 1:
        raise SrddError(f"--samples must be >= 1, got {samples}")
    found = builtin_samples(samples, seed) if data is None else load_file_samples(Path(data))
    if not found:
        raise SrddError(f"data file {data} holds no samples")
    return found[:samples]


def tokenize(samples: list[Sample], tokenizer, max_tokens: int) -> list[list[int]]:
    """Token ids of each sample, truncated to its first `max_tokens` tokens."""
    if max_tokens < 1:
        raise SrddError(f"--max-tokens must be >= 1, got {max_tokens}")
    out = []
    for s in samples:
        if s.messages is not None and getattr(tokenizer, "chat_template", None):
            msgs = [{"role": r, "content": c} for r, c in s.messages]
            ids = tokenizer.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
        else:
            text = s.text if s.text is not None else "\n".join(c for _, c in s.messages)
            ids = tokenizer(text)["input_ids"]
        ids = list(ids)[:max_tokens]
        if ids:
            out.append(ids)
    if not out:
        raise SrddError("every calibration sample tokenized to zero tokens")
    return out
