"""Deterministic grade-school math word problems (GSM8K-like) with integer answers.

Used as the scanner's default calibration set and as rin_train's built-in
task, so that neither needs a data download. Problems come from templates
filled by a seeded RNG; each question is assigned to train or test by its hash and
duplicates are skipped, so no question appears in both splits.

Three difficulties: `multi_step` (the default and the scanner's set: two or three
operations, GSM8K-like), `one_step` (a single +, - or x on numbers up to 30) and
`echo` (no operation: the answer is the one digit 0-9 in the question). `one_step`
exists because a model as small as SmolLM2-135M solves almost none of the multi-step
problems even at full precision, which leaves an RL demo no reward to learn from;
`echo` because a random tiny model (srdd.tiny's `tiny-echo`) can learn it in ~20
GRPO steps, which gives end-to-end tests of training a real learning signal.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass

NAMES = ("Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jamal",
         "Kira", "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Ravi", "Sofia", "Tom")
ITEMS = ("apples", "marbles", "stickers", "books", "pencils", "cookies", "stamps", "shells")
SPLIT_SEEDS = {"train": 0x5EED, "test": 0x7E57}


@dataclass(frozen=True)
class Problem:
    question: str
    answer: int


def _buy_and_give(r: random.Random) -> Problem:
    n, item = r.choice(NAMES), r.choice(ITEMS)
    a, b, c = r.randint(5, 60), r.randint(2, 40), r.randint(1, 20)
    c = min(c, a + b)
    return Problem(f"{n} has {a} {item}. {n} buys {b} more and then gives {c} to a friend. "
                   f"How many {item} does {n} have now?", a + b - c)


def _boxes(r: random.Random) -> Problem:
    n, item = r.choice(NAMES), r.choice(ITEMS)
    boxes, per, extra = r.randint(2, 12), r.randint(3, 25), r.randint(0, 15)
    return Problem(f"{n} packs {boxes} boxes with {per} {item} in each box and has {extra} "
                   f"{item} left over. How many {item} did {n} start with?", boxes * per + extra)


def _wage(r: random.Random) -> Problem:
    n = r.choice(NAMES)
    rate, hours, days = r.randint(8, 30), r.randint(2, 9), r.randint(2, 6)
    return Problem(f"{n} earns ${rate} per hour and works {hours} hours a day for {days} days. "
                   f"How many dollars does {n} earn in total?", rate * hours * days)


def _share(r: random.Random) -> Problem:
    n, item = r.choice(NAMES), r.choice(ITEMS)
    friends, each = r.randint(2, 9), r.randint(2, 15)
    kept = r.randint(1, 20)
    return Problem(f"{n} shares {friends * each + kept} {item}: {n} keeps {kept} and splits the rest "
                   f"equally among {friends} friends. How many {item} does each friend get?", each)


def _age(r: random.Random) -> Problem:
    a, b = r.sample(NAMES, 2)
    age, diff, years = r.randint(5, 40), r.randint(1, 30), r.randint(1, 15)
    return Problem(f"{a} is {age} years old and {b} is {diff} years older than {a}. "
                   f"How old will {b} be in {years} years?", age + diff + years)


def _discount(r: random.Random) -> Problem:
    n = r.choice(NAMES)
    price, qty = r.randint(2, 40) * 10, r.randint(2, 8)
    pct = r.choice((10, 20, 25, 50))
    total = price * qty * (100 - pct) // 100
    return Problem(f"A jacket costs ${price}. {n} buys {qty} jackets during a {pct}% off sale. "
                   f"How many dollars does {n} pay?", total)


TEMPLATES: tuple[Callable[[random.Random], Problem], ...] = (
    _buy_and_give, _boxes, _wage, _share, _age, _discount,
)


def _add(r: random.Random) -> Problem:
    n, item = r.choice(NAMES), r.choice(ITEMS)
    a, b = r.randint(2, 20), r.randint(2, 20)
    return Problem(f"{n} has {a} {item} and gets {b} more. How many {item} does {n} have now?", a + b)


def _take_away(r: random.Random) -> Problem:
    n, item = r.choice(NAMES), r.choice(ITEMS)
    a = r.randint(5, 30)
    b = r.randint(1, a - 1)
    return Problem(f"{n} has {a} {item} and gives {b} away. How many {item} does {n} have left?", a - b)


def _groups(r: random.Random) -> Problem:
    n, item = r.choice(NAMES), r.choice(ITEMS)
    boxes, per = r.randint(2, 9), r.randint(2, 9)
    return Problem(f"{n} has {boxes} boxes with {per} {item} in each box. How many {item} does {n} have?",
                   boxes * per)


def _echo(r: random.Random) -> Problem:
    n, item = r.choice(NAMES), r.choice(ITEMS)
    d = r.randint(0, 9)
    return Problem(f"{n} has {d} {item}. How many {item} does {n} have?", d)


ONE_STEP_TEMPLATES: tuple[Callable[[random.Random], Problem], ...] = (_add, _take_away, _groups)
DIFFICULTIES: dict[str, tuple[Callable[[random.Random], Problem], ...]] = {
    "multi_step": TEMPLATES,
    "one_step": ONE_STEP_TEMPLATES,
    "echo": (_echo,),
}
MAX_FRUITLESS_DRAWS = 100_000
"""Draws in a row that add no new problem after which a split counts as exhausted (`echo` has
20 names x 8 items x 10 digits = 1600 questions across both splits)."""


def split_of(question: str) -> str:
    """Every question belongs to exactly one split, by hash: splits are disjoint by construction."""
    return "test" if zlib.crc32(question.encode()) % 5 == 0 else "train"


def generate_problems(n: int, *, seed: int = 0, split: str = "train",
                      difficulty: str = "multi_step") -> list[Problem]:
    """`n` distinct problems of `split`; the same (n, seed, split, difficulty) always gives the same list.

    ValueError when the split has fewer than `n` distinct problems of that difficulty."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {list(DIFFICULTIES)}, got {difficulty!r}")
    templates = DIFFICULTIES[difficulty]
    rng = random.Random(SPLIT_SEEDS[split] * 1_000_003 + seed)
    seen: set[str] = set()
    problems: list[Problem] = []
    i = fruitless = 0
    while len(problems) < n:
        p = templates[i % len(templates)](rng)
        i += 1
        if p.question in seen or split_of(p.question) != split:
            fruitless += 1
            if fruitless > MAX_FRUITLESS_DRAWS:
                raise ValueError(f"the {split} split has only {len(problems)} distinct {difficulty} problems, "
                                 f"{n} were asked for")
            continue
        fruitless = 0
        seen.add(p.question)
        problems.append(p)
    return problems
