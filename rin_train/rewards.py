"""Exact numeric-answer rewards, both always reported.

- strict: the number after the last `####` (GSM8K's answer format, what verl's
  gsm8k scorer grades) must equal the answer.
- flexible: the last number anywhere in the completion must equal the answer
  (lm-evaluation-harness' "flexible-extract").

Numbers are compared by value after removing `,` thousands separators and `$`:
"1,000", "$1000" and "1000.00" all equal 1000. The training reward is strict, with
optional credit for a well-formed wrong answer (`training_reward`, verl's format_score).
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"
_STRICT = re.compile(r"####\s*(" + _NUMBER + r")")
_ANY = re.compile(_NUMBER)


def normalize(text: str | int | float | None) -> str | None:
    """Canonical string of a number ('1,000.00' -> '1000', '-3.50' -> '-3.5'), None if not a number."""
    if text is None:
        return None
    cleaned = str(text).replace(",", "").replace("$", "").strip().rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    value = value.normalize()
    if value == value.to_integral_value():
        return str(int(value))
    return format(value, "f")


def strict_answer(completion: str) -> str | None:
    matches = _STRICT.findall(completion)
    return normalize(matches[-1]) if matches else None


def flexible_answer(completion: str) -> str | None:
    numbers = _ANY.findall(completion)
    return normalize(numbers[-1]) if numbers else None


def strict_reward(completion: str, answer: str | int) -> float:
    got = strict_answer(completion)
    return 1.0 if got is not None and got == normalize(answer) else 0.0


def training_reward(completion: str, answer: str | int, format_score: float = 0.0) -> float:
    """1.0 for a correct strict answer, `format_score` for a well-formed wrong one, else 0 (verl's gsm8k)."""
    got = strict_answer(completion)
    if got is None:
        return 0.0
    return 1.0 if got == normalize(answer) else format_score


def flexible_reward(completion: str, answer: str | int) -> float:
    got = flexible_answer(completion)
    return 1.0 if got is not None and got == normalize(answer) else 0.0


def completion_text(completion) -> str:
    """TRL passes conversational completions as [{'role': 'assistant', 'content': ...}]."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)
