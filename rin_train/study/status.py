"""`srdd study status`: where a study stands, read from its run directories (no torch, no locks taken).

Accuracy columns follow DESIGN.md §3 "Accuracy as it would be deployed": `separate` is the
policy as trained (fp LoRA beside the quantized base, the validation line's `accuracy`),
`merged` the LoRA merged into the weights and re-quantized (the final line's `eval_merged`).
Both are shown only for the final step (lesson 6: an earlier accuracy is not a final one);
runs written before the trainer measured the merged policy show "—" there.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from dataclasses import dataclass
from pathlib import Path

from rin_train.rundir import RunDir
from rin_train.study.ledger import StudyLock, wall_times
from rin_train.study.rundirs import RunSpec, RunState, State, inspect, plan
from rin_train.study.runner import duration
from rin_train.study.settings import Settings
from srdd.errors import SrddError

Accuracy = tuple[float, float | None]  # strict, flexible


@dataclass(frozen=True)
class Row:
    spec: RunSpec
    state: RunState
    steps_done: int | None
    separate: Accuracy | None
    merged: Accuracy | None
    wall_s: float | None


def _pair(rec: dict) -> Accuracy | None:
    strict = rec.get("accuracy")
    if not isinstance(strict, (int, float)):
        return None
    flexible = rec.get("accuracy_flexible")
    return float(strict), float(flexible) if isinstance(flexible, (int, float)) else None


def final_accuracies(records: list[dict], steps: int) -> tuple[Accuracy | None, Accuracy | None]:
    """(separate, merged) at the final step; None where that step was not validated that way."""
    final = [r for r in records if r["step"] == steps and r.get("accuracy") is not None]
    if not final:
        return None, None
    rec = final[0]  # the first record of a step stands (a resumed run never re-logs it)
    if rec.get("eval_lora", "separate") != "separate":
        return None, None
    merged = rec.get("eval_merged")
    return _pair(rec), _pair(merged) if isinstance(merged, dict) else None


def _recorded_wall(path: Path) -> float | None:
    """A run not trained by this study: finish minus start from run.json (includes any pause)."""
    try:
        info = RunDir.open(path).info()
        started, finished = info.get("started"), info.get("finished")
        if not (started and finished):
            return None
        return (_dt.datetime.fromisoformat(finished) - _dt.datetime.fromisoformat(started)).total_seconds()
    except (SrddError, ValueError, TypeError):  # TypeError: a hand-edited run.json with non-string times
        return None


def _current_attempt_s(path: Path) -> float | None:
    """A live run: seconds since its process started (the last resume, else the start). attempts.jsonl
    gets a line only when a child ends, so without this a study's first run would read 0 s for hours."""
    try:
        info = RunDir.open(path).info()
        resumed = info.get("resumed") or []
        since = resumed[-1]["at"] if resumed else info["started"]
        return (_dt.datetime.now(_dt.timezone.utc) - _dt.datetime.fromisoformat(since)).total_seconds()
    except (SrddError, ValueError, KeyError, TypeError):
        return None


def read_row(spec: RunSpec, walls: dict[str, float]) -> Row:
    state = inspect(spec.path)
    if state.state is State.PENDING:
        return Row(spec, state, None, None, None, None)
    try:
        records = RunDir(spec.path).logged_steps()
    except SrddError:
        records = []
    done = max((r["step"] for r in records), default=None)
    separate, merged = final_accuracies(records, spec.arm.steps)
    wall = walls.get(spec.name)
    if wall is None and state.state is State.COMPLETE:
        wall = _recorded_wall(spec.path)
    if state.state is State.LIVE:
        current = _current_attempt_s(spec.path)
        wall = wall if current is None else (wall or 0.0) + current
    return Row(spec, state, done, separate, merged, wall)


def _acc(a: Accuracy | None) -> str:
    if a is None:
        return "—"
    strict, flexible = a
    return f"{100 * strict:5.1f} / " + ("  —" if flexible is None else f"{100 * flexible:5.1f}")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = (0, 2)

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *map(line, rows)]


def status_lines(settings: Settings, runs: Path) -> list[str]:
    walls = wall_times(runs)
    rows = [read_row(spec, walls) for spec in sorted(plan(settings, runs), key=lambda s: (_order(settings, s), s.seed))]
    words = ([f"--preset {settings.preset}"] if settings.preset else []) + [f"--set {s}" for s in settings.sets]
    sets = " ".join(words) or "none"
    out = [f"study {runs}: suite {settings.suite}, seeds {','.join(map(str, settings.seeds))}, overrides: {sets}"]
    declared = [f"{flag} {value}" for flag, value in (
        ("--analysis", settings.analysis),
        ("--margin", None if settings.margin_pp is None else f"{settings.margin_pp:g}"),
        ("--hypotheses", settings.hypotheses and ",".join(settings.hypotheses)),
        ("--arms", settings.declared_arms and ",".join(settings.declared_arms))) if value is not None]
    if declared:  # a pre-registered study: what it declared (its report's settings, its arms)
        out.append("declared: " + " ".join(declared))
    if StudyLock(runs).held_elsewhere():
        out.append("a `srdd study run` is working in it now")
    out += ["accuracy % (strict / flexible) at the final step: separate = LoRA beside the quantized base "
            "(as trained), merged = LoRA merged and re-quantized (as deployed)", ""]
    body = [[r.spec.arm.name, str(r.spec.seed), _state_word(r.state),
             f"{'—' if r.steps_done is None else r.steps_done}/{r.spec.arm.steps}",
             _acc(r.separate), _acc(r.merged), duration(r.wall_s)] for r in rows]
    out += _table(["arm", "seed", "status", "steps", "separate", "merged", "wall"], body)
    out += [""] + summary(rows)
    return out


def _order(settings: Settings, spec: RunSpec) -> int:
    return [a.name for a in settings.arms].index(spec.arm.name)


def _state_word(state: RunState) -> str:
    if state.state is State.FAILED:
        return state.status or "failed"
    return state.state.value


def summary(rows: list[Row]) -> list[str]:
    """Counts, total wall time and the time left (mean wall time of complete runs x runs not complete)."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[_state_word(r.state)] = counts.get(_state_word(r.state), 0) + 1
    done = [r.wall_s for r in rows if r.state.state is State.COMPLETE and r.wall_s is not None]
    left = sum(1 for r in rows if r.state.state is not State.COMPLETE)
    total = sum(r.wall_s for r in rows if r.wall_s is not None)
    lines = [f"{len(rows)} runs: " + ", ".join(f"{n} {word}" for word, n in sorted(counts.items()))
             + f"; wall time so far {duration(total)}"]
    if left == 0:
        lines.append("every run is complete")
    elif done:
        mean = statistics.fmean(done)
        lines.append(f"estimated time left: {duration(mean * left)} ({left} runs x {duration(mean)}, the mean of "
                     f"{len(done)} complete run{'s' if len(done) > 1 else ''})")
    else:
        lines.append(f"estimated time left: unknown until a run completes ({left} runs left)")
    failed = [r for r in rows if r.state.state is State.FAILED]
    lines += [f"  {r.spec.name}: {r.state.status} ({r.state.reason})" for r in failed]
    return lines
