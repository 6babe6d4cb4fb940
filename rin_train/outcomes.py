"""Every evaluation's per-problem outcomes, one line each in the run's `eval_outcomes.jsonl`.

An accuracy alone cannot say which problems a change fixed or broke, nor how much of the spread
between runs is the test set's rather than training's: that needs each problem's outcome. A line:

    {"step": 20, "eval_quant": "mxfp4/w4a4", "eval_lora": "merged",
     "test_set_sha256": "<hex>", "ids": ["3f9c...", ...], "strict": "0110...", "flexible": "0111..."}

`strict`/`flexible` are '0'/'1' strings aligned with `ids` (compact: one byte a problem), the ids
are `rin_train.tasks.problem_ids`, and `test_set_sha256` hashes the ordered (id, prompt, answer)
list, so two runs are compared problem by problem only when they saw the same test set in the same
order. The accuracies the same evaluation writes to metrics.jsonl are the means of these strings.
`reports.outcomes` reads the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from rin_train.rundir import RunDir
from rin_train.tasks import Example, problem_ids

def sha256_of_test_set(ids: Sequence[str], examples: Sequence[Example]) -> str:
    """sha256 of the ordered (id, prompt messages, answer) list as canonical JSON."""
    if len(ids) != len(examples):
        raise ValueError(f"{len(ids)} ids for {len(examples)} examples")
    rows = [[i, [list(m) for m in e.prompt], e.answer] for i, e in zip(ids, examples)]
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode("utf-8")).hexdigest()


def bits(hits: Sequence[bool]) -> str:
    return "".join("1" if hit else "0" for hit in hits)


@dataclass(frozen=True)
class OutcomeLog:
    """Appends the outcome lines of one run's evaluations on one test set."""

    run: RunDir
    ids: tuple[str, ...]
    test_set_sha256: str

    def __post_init__(self) -> None:
        if not self.ids or len(set(self.ids)) != len(self.ids):
            raise ValueError("an outcome log needs a non-empty list of distinct problem ids")

    @classmethod
    def for_test_set(cls, run: RunDir, examples: Sequence[Example]) -> OutcomeLog:
        ids = problem_ids(list(examples))
        return cls(run, tuple(ids), sha256_of_test_set(ids, examples))

    def append(self, step: int, evaluation: dict, per_problem: dict[str, Sequence[bool]]) -> None:
        """Write the line of one evaluation (`evaluation` labels it: eval_quant, eval_lora).

        `per_problem` holds "strict" and "flexible" correctness in test-set order, as rin_train.evaluate
        returns them."""
        record = {"step": step, "eval_quant": evaluation["eval_quant"], "eval_lora": evaluation["eval_lora"],
                  "test_set_sha256": self.test_set_sha256, "ids": list(self.ids)}
        for kind in ("strict", "flexible"):
            hits = per_problem[kind]
            if len(hits) != len(self.ids):
                raise ValueError(f"{len(hits)} {kind} outcomes for a test set of {len(self.ids)} problems")
            record[kind] = bits(hits)
        self.run.append_outcomes(record)
