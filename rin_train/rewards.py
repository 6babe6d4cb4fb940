"""Exact numeric-answer rewards: strict (`#### n`, as GSM8K grading) and flexible (last number)."""

from __future__ import annotations

import re

_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"


def _norm(text: str) -> str | None:
    cleaned = text.replace(",", "").replace("$", "").strip()
    try:
        value = float(cleaned)
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else str(value)


def strict_answer(completion: str) -> str | None:
    match = re.search(r"####\s*(" + _NUMBER + ")", completion)
    return _norm(match.group(1)) if match else None


def flexible_answer(completion: str) -> str | None:
    numbers = re.findall(_NUMBER, completion)
    return _norm(numbers[-1]) if numbers else None


def strict_reward(completion: str, answer: str) -> float:
    return 1.0 if strict_answer(completion) == _norm(answer) else 0.0


def flexible_reward(completion: str, answer: str) -> float:
    return 1.0 if flexible_answer(completion) == _norm(answer) else 0.0
