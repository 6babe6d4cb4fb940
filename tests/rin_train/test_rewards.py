"""Strict (`#### n`) and flexible (last number) answer matching, both reported."""

import pytest

from rin_train.rewards import (completion_text, flexible_answer, flexible_reward, normalize, strict_answer,
                               strict_reward, training_reward)


@pytest.mark.parametrize("completion,answer,strict,flexible", [
    ("3 + 4 = 7.\n#### 7", 7, 1.0, 1.0),
    ("3 + 4 = 7", 7, 0.0, 1.0),                       # right number, wrong format
    ("#### 7\nThe answer is 8.", 7, 1.0, 0.0),        # strict reads after ####, flexible the last number
    ("#### 5 ... no wait #### 7", 7, 1.0, 1.0),       # the last #### counts
    ("####1,200 dollars", 1200, 1.0, 1.0),            # thousands separators
    ("They pay $1,200.00.", "1200", 0.0, 1.0),        # currency and trailing zeros
    ("#### -3", -3, 1.0, 1.0),
    ("#### 2.5", "2.5", 1.0, 1.0),
    ("#### 7", 8, 0.0, 0.0),
    ("no number at all", 7, 0.0, 0.0),
    ("", 0, 0.0, 0.0),
])
def test_strict_and_flexible(completion, answer, strict, flexible):
    assert strict_reward(completion, answer) == strict
    assert flexible_reward(completion, answer) == flexible


def test_extraction_and_normalisation():
    assert strict_answer("x #### 1,000.50") == "1000.5"
    assert strict_answer("no hashes 12") is None
    assert flexible_answer("a 1 b 2 c 3.") == "3"
    assert normalize("$1,000") == "1000" and normalize("07") == "7" and normalize("abc") is None


def test_training_reward_format_credit():
    assert training_reward("#### 7", 7, 0.1) == 1.0
    assert training_reward("#### 8", 7, 0.1) == 0.1
    assert training_reward("7", 7, 0.1) == 0.0


def test_conversational_completions():
    assert completion_text([{"role": "assistant", "content": "#### 4"}]) == "#### 4"
    assert completion_text("#### 4") == "#### 4"
