"""Per-problem outcomes of a run's evaluations (`eval_outcomes.jsonl`, written by rin_train.outcomes).

They turn "run A scored 3 points more than run B" into which problems flipped each way (the
discordant counts McNemar's test needs), and let the variance between runs be split into its
seed, run and problem parts. Runs written before the file existed (and verl runs without the
validation dumps it is made from: verl's logs hold only aggregates) have none: `final_outcomes`
returns None for them, and a report can only bound the problem part of their variance, never
measure it. verl runs validate only as trained: their lines are all eval_lora "separate".
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from srdd.errors import SrddError

OUTCOMES = "eval_outcomes.jsonl"
"""rin_train.rundir.OUTCOMES, named here too: reading a report must not import the training stack (torch)."""
EVAL_LORAS = ("separate", "merged")
KINDS = ("strict", "flexible")
MAX_BYTES = 64 << 20
"""Larger files are refused unread: an evaluation of GSM8K's 1319 test problems is a ~30 KB line, so this
holds ~2000 of them."""
_SHA256 = re.compile(r"[0-9a-f]{64}")
_BITS = re.compile(r"[01]*")


def _bits(value, what: str) -> np.ndarray:
    if not isinstance(value, str) or not _BITS.fullmatch(value):
        raise ValueError(f"{what} must be a string of '0'/'1', got {str(value)[:40]!r}")
    return np.frombuffer(value.encode("ascii"), dtype=np.uint8) == ord("1")


@dataclass(frozen=True)
class ProblemOutcomes:
    """One evaluation: each problem's strict and flexible correctness, aligned with `ids`."""

    step: int
    eval_quant: str
    eval_lora: str
    test_set_sha256: str
    ids: tuple[str, ...]
    strict: np.ndarray
    flexible: np.ndarray

    def __post_init__(self) -> None:
        if isinstance(self.step, bool) or not isinstance(self.step, int) or self.step < 0:
            raise ValueError(f"step is {self.step!r}, not an integer >= 0")
        if not isinstance(self.eval_quant, str) or not self.eval_quant:
            raise ValueError(f"eval_quant is {self.eval_quant!r}, not a quant label such as 'mxfp4/w4a4'")
        if self.eval_lora not in EVAL_LORAS:
            raise ValueError(f"eval_lora is {self.eval_lora!r}, not one of {list(EVAL_LORAS)}")
        if not isinstance(self.test_set_sha256, str) or not _SHA256.fullmatch(self.test_set_sha256):
            raise ValueError(f"test_set_sha256 is {str(self.test_set_sha256)[:80]!r}, not 64 lowercase hex digits")
        if not isinstance(self.ids, tuple) or not self.ids or not all(isinstance(i, str) and i for i in self.ids):
            raise ValueError("ids must be a non-empty tuple of non-empty strings")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("ids repeat: each problem of a test set has its own id")
        for kind in KINDS:
            value = getattr(self, kind)
            if not isinstance(value, np.ndarray) or value.dtype != np.bool_ or value.shape != (len(self.ids),):
                raise ValueError(f"{kind} must be a bool array of one entry per id ({len(self.ids)}), got "
                                 f"{getattr(value, 'dtype', type(value).__name__)} of shape {getattr(value, 'shape', '?')}")
            frozen = value.copy()  # frozen means frozen: neither the caller's array nor ours can change it later
            frozen.flags.writeable = False
            object.__setattr__(self, kind, frozen)

    @classmethod
    def from_record(cls, record) -> ProblemOutcomes:
        """One eval_outcomes.jsonl object; ValueError says which field is wrong."""
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        missing = [k for k in ("step", "eval_quant", "eval_lora", "test_set_sha256", "ids", *KINDS) if k not in record]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        ids = record["ids"]
        if not isinstance(ids, list):
            raise ValueError(f"ids is a {type(ids).__name__}, not a list")
        return cls(record["step"], record["eval_quant"], record["eval_lora"], record["test_set_sha256"], tuple(ids),
                   *(_bits(record[kind], kind) for kind in KINDS))

    @property
    def n(self) -> int:
        return len(self.ids)

    def accuracy(self, kind: str = "strict") -> float:
        """The mean that the same evaluation wrote to metrics.jsonl (accuracy / accuracy_flexible)."""
        return float(np.count_nonzero(self._kind(kind))) / self.n

    def _kind(self, kind: str) -> np.ndarray:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
        return getattr(self, kind)


def _read_text(path: Path) -> str:
    """The whole file; refused unread when it is over MAX_BYTES, not a regular file, or a symlink (a run
    directory holds none), and refused when binary."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not block the reader
    except OSError as exc:
        if path.is_symlink():
            raise SrddError(f"{path} is a symlink; a run directory's files are never symlinks (replace it with "
                            "the real file)") from None
        raise SrddError(f"{path}: cannot read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SrddError(f"{path} is not a regular file")
        if info.st_size > MAX_BYTES:
            raise SrddError(f"{path} is {info.st_size:,} bytes, over the {MAX_BYTES:,} an outcomes file may have "
                            "(well under a MB per evaluation); not read")
        data = fh.read(MAX_BYTES + 1)  # bounded even if the file grows after the check
    if len(data) > MAX_BYTES:
        raise SrddError(f"{path} grew past {MAX_BYTES:,} bytes while it was read; not read")
    if b"\0" in data:
        raise SrddError(f"{path} is binary (holds NUL bytes), not JSON lines")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SrddError(f"{path} is not UTF-8 text (byte {exc.start})") from None


def read_outcomes(run_dir: Path) -> list[ProblemOutcomes]:
    """Every line of run_dir/eval_outcomes.jsonl in file order ([] when the run has none)."""
    path = Path(run_dir) / OUTCOMES
    if not path.exists() and not path.is_symlink():
        return []
    out = []
    for i, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(ProblemOutcomes.from_record(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise SrddError(f"{path}:{i}: corrupt line ({exc.msg}): {line[:80]!r}") from None
        except ValueError as exc:
            raise SrddError(f"{path}:{i}: {exc}") from None
    return out


def final_outcomes(run_dir: Path, eval_lora: str = "merged") -> ProblemOutcomes | None:
    """The outcomes at the run's largest evaluated step for `eval_lora`; None for a run without any.

    A step evaluated twice (a run resumed after dying between its validation and its metrics line)
    counts by its last line, the evaluation whose accuracy metrics.jsonl holds."""
    if eval_lora not in EVAL_LORAS:
        raise ValueError(f"eval_lora must be one of {list(EVAL_LORAS)}, got {eval_lora!r}")
    return _final(read_outcomes(run_dir), eval_lora)


def _final(lines: list[ProblemOutcomes], eval_lora: str) -> ProblemOutcomes | None:
    lines = [o for o in lines if o.eval_lora == eval_lora]
    if not lines:
        return None
    last = max(o.step for o in lines)
    return [o for o in lines if o.step == last][-1]


@dataclass(frozen=True)
class Flips:
    """How two evaluations of one test set differ problem by problem (McNemar's table)."""

    kind: str
    gained: tuple[str, ...]
    """Ids wrong in a, right in b."""
    lost: tuple[str, ...]
    """Ids right in a, wrong in b."""
    both_right: int
    both_wrong: int

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.both_right < 0 or self.both_wrong < 0:
            raise ValueError("counts cannot be negative")
        if set(self.gained) & set(self.lost):
            raise ValueError("a problem cannot both gain and lose")

    @property
    def n(self) -> int:
        return len(self.gained) + len(self.lost) + self.both_right + self.both_wrong

    @property
    def net(self) -> int:
        """Problems b solves beyond a: n times b's accuracy minus a's."""
        return len(self.gained) - len(self.lost)


def flips(a: ProblemOutcomes, b: ProblemOutcomes, kind: str = "strict") -> Flips:
    """Which problems flipped from `a` to `b`; refused unless both evaluated the same test set, in the same order."""
    if a.test_set_sha256 != b.test_set_sha256 or a.ids != b.ids:
        raise SrddError(f"the two evaluations used different test sets (sha256 {a.test_set_sha256[:12]}… over "
                        f"{a.n} problems vs {b.test_set_sha256[:12]}… over {b.n}); problems can only be "
                        "compared one by one on the same test set")
    x, y = a._kind(kind), b._kind(kind)
    ids = np.array(a.ids, dtype=object)
    return Flips(kind, tuple(ids[~x & y]), tuple(ids[x & ~y]), int(np.count_nonzero(x & y)),
                 int(np.count_nonzero(~x & ~y)))


def outcomes_problem(run_dir: Path, finals: dict[str, tuple[int, float]], eval_quant: str | None) -> str | None:
    """Why a run's outcomes disagree with its metrics, or None (also when it has no outcomes file).

    `finals` maps eval_lora to (step, strict accuracy) of the run's final evaluation as metrics.jsonl
    records it. A run that keeps outcomes keeps them for every evaluation, so its final evaluations
    must each have a line at the same step, under the same quant mode, whose mean is that accuracy."""
    try:
        lines = read_outcomes(run_dir)
    except SrddError as exc:
        return str(exc)
    if not lines:
        return None
    for lora, (step, accuracy) in finals.items():
        final = _final(lines, lora)
        where = f"{OUTCOMES}, LoRA {lora}"
        if final is None or final.step != step:
            return f"{where}: no line for the final evaluation at step {step}" + (
                "" if final is None else f" (its last is at step {final.step})")
        if eval_quant is not None and final.eval_quant != eval_quant:
            return f"{where}: measured under {final.eval_quant}, metrics.jsonl under {eval_quant}"
        if abs(final.accuracy() - accuracy) > 1e-12:
            return (f"{where}: step {step} has {final.accuracy():.6f} of {final.n} problems right, metrics.jsonl "
                    f"says accuracy {accuracy:.6f}")
    return None
