"""A study: every arm of a `srdd calibrate --suite` (plus a no-noise control) x every seed.

One study = one setting: the suite's configs, the seeds and the `--set` overrides are
recorded once and a later call with other settings is refused, so the runs of a
directory can always be compared with each other. Layout of RUNS_DIR:

    <arm>-s<seed>/             one `srdd train` run directory per arm and seed; the -s<seed>
                               suffix is what `srdd correlate` groups seeds by
    _study/study.json          the settings (suite, seeds, --set, every arm's config and its sha256)
    _study/control.yaml        the control arm: the suite's baseline with noise.enabled false
    _study/attempts.jsonl      one line per child process: run, action, exit code, status, wall time
    _study/study.lock          held by the `srdd study run` in progress
    _failed/<name>-<stamp>/    failed runs moved aside by --retry-failed (never deleted)

Neither `_study` nor `_failed` holds a run.json, so `srdd correlate RUNS_DIR` never reads them.

Each run is a child process `python -m srdd train` (a crash or an out-of-memory kill
costs one run, not the study); its output goes straight to this terminal. What a
run directory's state means for the next `srdd study run`:

    complete                              skipped
    running, lock held by a live process  skipped (another process trains it)
    running, lock free (process killed)   resumed: `srdd train --resume --out DIR`
    failed by SIGTERM/SIGHUP/Ctrl-C       resumed (it was stopped, not broken)
    failed, invalid, unreadable           reported; with --retry-failed moved aside and run anew
"""

from __future__ import annotations

import datetime as _dt
import enum
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from rin_train.rundir import RunDir, lock_held, now_iso, try_lock
from srdd.errors import SrddError
from srdd.jsonio import dumps_json, write_text_atomic

SCHEMA = "srdd.study/v1"
STUDY_DIR = "_study"
FAILED_DIR = "_failed"
CONTROL = "control"
RESERVED_SETS = ("seed", "name", "engine")  # given by --seeds, the run directory and the study itself
# The reasons `srdd train` records when a signal stopped it (rin_train.signals, rin_train.train):
# such a run was interrupted, not broken, and is resumed like a killed one.
INTERRUPTED_REASONS = ("terminated by SIG", "interrupted (Ctrl-C)")
SIGINT_GRACE_S = 10.0   # Ctrl-C in a terminal reaches the child too: let it mark itself failed first
SIGTERM_GRACE_S = 120.0  # then SIGKILL (the run is left "running", lock free: resumed next time)


# --- settings ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Arm:
    name: str
    config: Path
    sha256: str
    steps: int  # grpo.steps of the resolved config (what "steps logged / total" counts to)

    def to_dict(self, base: Path) -> dict:
        return {"name": self.name, "config": os.path.relpath(self.config, base), "sha256": self.sha256,
                "steps": self.steps}


@dataclass(frozen=True)
class Settings:
    """What makes two calls the same study: the suite's files, the seeds, the preset and the --set overrides."""

    suite: Path
    suite_sha256: str
    seeds: tuple[int, ...]
    sets: tuple[str, ...]
    arms: tuple[Arm, ...]
    preset: str | None = None

    def __post_init__(self) -> None:
        check_seeds(self.seeds)
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise SrddError(f"the study's arms must have distinct names, got {names}")

    def identity(self) -> dict:
        """The part compared between calls (paths may move; contents may not change)."""
        return {"suite.json": self.suite_sha256, "seeds": list(self.seeds), "--preset": self.preset,
                "--set": list(self.sets), "arms": {a.name: a.sha256 for a in self.arms}}

    def to_dict(self, base: Path) -> dict:
        """Paths relative to `base`, the folder of the file that stores them: a runs directory can be moved
        or committed with its suite (from_dict resolves them against that folder again)."""
        base = base.resolve()
        return {"schema": SCHEMA, "created": now_iso(), "suite": os.path.relpath(self.suite, base),
                "suite_sha256": self.suite_sha256, "seeds": list(self.seeds), "preset": self.preset,
                "sets": list(self.sets), "arms": [a.to_dict(base) for a in self.arms]}

    @classmethod
    def from_dict(cls, doc: dict, where: Path) -> Settings:
        try:
            if doc["schema"] != SCHEMA:
                raise SrddError(f"{where}: schema {doc['schema']!r}, expected {SCHEMA}")
            base = where.parent  # an absolute path (files written before paths were relative) stays as it is
            arms = tuple(Arm(a["name"], _joined(base, a["config"]), a["sha256"], int(a["steps"])) for a in doc["arms"])
            return cls(_joined(base, doc["suite"]), doc["suite_sha256"], tuple(doc["seeds"]), tuple(doc["sets"]), arms,
                       doc.get("preset"))
        except (KeyError, TypeError, ValueError) as exc:
            raise SrddError(f"{where}: not a study file ({type(exc).__name__}: {exc})") from None


def _joined(base: Path, path: str) -> Path:
    return Path(os.path.normpath(base / path))


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise SrddError(f"--seeds: expected comma-separated integers such as 0,1,2, got {text!r}") from None
    check_seeds(seeds)
    return seeds


def check_seeds(seeds: tuple[int, ...]) -> None:
    if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise SrddError(f"--seeds: distinct non-negative integers, got {','.join(map(str, seeds)) or 'none'}")


def check_sets(sets: Sequence[str]) -> None:
    for s in sets:
        key = s.split("=", 1)[0].strip()
        if "=" not in s or not key:
            raise SrddError(f"--set {s!r}: expected KEY=VALUE")
        if key in RESERVED_SETS:
            raise SrddError(f"--set {s!r}: a study sets {key} itself (seeds with --seeds, names from the arm "
                            "and seed, engine trl)")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_suite(suite: Path) -> tuple[dict, list[tuple[str, Path]]]:
    """suite.json and its experiments' config files, in priority order."""
    if not suite.is_dir():
        raise SrddError(f"suite directory {suite} does not exist (write one with srdd calibrate SCAN -o M.yaml "
                        "--suite DIR)")
    path = suite / "suite.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        exps = sorted(doc["experiments"], key=lambda e: e["priority"])
        configs = [(e["name"], suite / e["config"]) for e in exps]
    except FileNotFoundError:
        raise SrddError(f"{suite} holds no suite.json; is it a suite written by srdd calibrate --suite?") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise SrddError(f"{path}: not a srdd suite ({type(exc).__name__}: {exc})") from None
    if not configs:
        raise SrddError(f"{path} lists no experiments")
    for name, config in configs:
        if name == CONTROL:
            raise SrddError(f"{path}: an experiment is named {CONTROL!r}, the name of the study's no-noise arm")
        if not config.is_file():
            raise SrddError(f"{path} lists {name} but {config} does not exist")
    return doc, configs


def control_config(baseline: Path) -> dict:
    """The baseline config with noise switched off: it differs from the baseline in noise.enabled alone."""
    try:
        doc = yaml.safe_load(baseline.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SrddError(f"{baseline}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("noise"), dict):
        raise SrddError(f"{baseline}: expected a run config with a noise section")
    return {**doc, "name": CONTROL, "noise": {**doc["noise"], "enabled": False}}


def control_text(config: dict, baseline: Path) -> str:
    return (f"# the study's control arm: {baseline.name} without noise (written by srdd study run)\n"
            + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=120))


def resolve_steps(config: Path | dict, sets: Sequence[str], seed: int, preset_name: str | None = None) -> int:
    """Load a config as `srdd train` will (every error before any run starts) and return grpo.steps."""
    from rin_train.presets import preset
    from rin_train.run_config import check_against_model, load_run_config
    from rin_train.train import model_num_layers

    where = config.name if isinstance(config, Path) else f"the {CONTROL} arm"
    try:
        cfg = load_run_config(config, [*sets, f"seed={seed}", "engine=trl"], preset=preset(preset_name))
        check_against_model(cfg, model_num_layers(cfg.model))
    except SrddError as exc:
        raise SrddError(f"{where} with the study's --set: {exc}") from None
    return cfg.grpo.steps


def build_settings(suite: Path, runs: Path, seeds: tuple[int, ...], sets: tuple[str, ...],
                   preset_name: str | None = None) -> tuple[Settings, str]:
    """The settings of this call, every arm validated through rin_train, and the text of control.yaml.

    Nothing is written: `open_study` records them once they are known to be good.
    """
    check_sets(sets)
    _, configs = read_suite(suite)
    control = control_config(configs[0][1])
    text = control_text(control, configs[0][1])
    check_seeds(seeds)
    seed = seeds[0]
    arms = [Arm(CONTROL, (runs / STUDY_DIR / "control.yaml").resolve(), sha256_text(text),
                resolve_steps(control, sets, seed, preset_name))]
    arms += [Arm(name, path.resolve(), hashlib.sha256(path.read_bytes()).hexdigest(),
                 resolve_steps(path, sets, seed, preset_name)) for name, path in configs]
    suite_sha = hashlib.sha256((suite / "suite.json").read_bytes()).hexdigest()
    return Settings(suite.resolve(), suite_sha, seeds, sets, tuple(arms), preset_name), text


def study_file(runs: Path) -> Path:
    return runs / STUDY_DIR / "study.json"


def load_settings(runs: Path) -> Settings:
    path = study_file(runs)
    if not path.is_file():
        raise SrddError(f"{runs} holds no study ({path} missing); start one with srdd study run SUITE --seeds ... "
                        f"--runs {runs}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SrddError(f"{path} is not valid JSON: {exc}") from None
    return Settings.from_dict(doc, path)


def mismatch(recorded: Settings, wanted: Settings) -> list[str]:
    old, new = recorded.identity(), wanted.identity()
    lines = []
    for key in old:
        if old[key] != new[key]:
            if key == "arms":
                changed = sorted(n for n in {*old[key], *new[key]} if old[key].get(n) != new[key].get(n))
                lines.append(f"the config files of {', '.join(changed)} changed")
            elif key == "suite.json":
                lines.append("suite.json changed (a new calibration is a new study)")
            else:
                lines.append(f"{key}: recorded {old[key]}, now {new[key]}")
    return lines


def open_study(runs: Path, settings: Settings, control: str) -> Settings:
    """Record the settings on the first call; on later calls, refuse other settings.

    Returns this call's settings: the same study, with the paths where its files are now."""
    path = study_file(runs)
    if path.is_file():
        recorded = load_settings(runs)
        diff = mismatch(recorded, settings)
        if diff:
            raise SrddError(f"{runs} holds a study with other settings ({'; '.join(diff)}); one runs directory "
                            f"holds one study: repeat its settings (srdd study status {runs} shows them) or "
                            "choose another --runs")
    path.parent.mkdir(parents=True, exist_ok=True)
    control_path = runs / STUDY_DIR / "control.yaml"
    if not control_path.is_file() or control_path.read_text(encoding="utf-8") != control:
        write_text_atomic(control_path, control, force=True)  # exactly the text whose sha256 is recorded
    if not path.is_file():
        write_text_atomic(path, dumps_json(settings.to_dict(path.parent)))
    return settings


# --- run directories ---------------------------------------------------------------------------------

class State(enum.Enum):
    PENDING = "pending"          # no directory yet
    COMPLETE = "complete"
    LIVE = "running"             # a live process holds the run's lock
    KILLED = "killed"            # status running, lock free: the process died
    INTERRUPTED = "interrupted"  # failed by a signal: stopped, not broken
    FAILED = "failed"            # failed, invalid, or unreadable

    @property
    def resumable(self) -> bool:
        return self in (State.KILLED, State.INTERRUPTED)


@dataclass(frozen=True)
class RunState:
    state: State
    reason: str | None = None
    status: str | None = None  # run.json's own status word


def inspect(path: Path) -> RunState:
    if not path.exists():
        return RunState(State.PENDING)
    try:
        run = RunDir.open(path)
        info = run.info()
    except SrddError as exc:
        return RunState(State.FAILED, str(exc), "unreadable")
    status, reason = info.get("status"), info.get("reason")
    if status == "complete":
        return RunState(State.COMPLETE, None, status)
    if status == "running":
        return RunState(State.LIVE if run.is_live() else State.KILLED, reason, status)
    if status == "failed" and isinstance(reason, str) and reason.startswith(INTERRUPTED_REASONS):
        return RunState(State.INTERRUPTED, reason, status)
    return RunState(State.FAILED, reason, status)


@dataclass(frozen=True)
class RunSpec:
    arm: Arm
    seed: int
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


def run_name(arm: str, seed: int) -> str:
    return f"{arm}-s{seed}"


def check_only(only: Sequence[str] | None, names: Sequence[str], control: bool) -> None:
    if only is None:
        return
    unknown = [n for n in only if n not in names]
    if unknown:
        raise SrddError(f"--only: unknown arm(s) {', '.join(unknown)}; the study's arms: {', '.join(names)}")
    if not only or (not control and set(only) == {CONTROL}):
        raise SrddError("nothing selected: an empty --only, or --only control with --no-control")


def plan(settings: Settings, runs: Path, only: Sequence[str] | None = None, control: bool = True) -> list[RunSpec]:
    """Every selected arm x seed, seed by seed: after each pass every arm has one more replicate."""
    check_only(only, [a.name for a in settings.arms], control)
    arms = [a for a in settings.arms if (only is None or a.name in only) and (control or a.name != CONTROL)]
    return [RunSpec(a, s, runs / run_name(a.name, s)) for s in settings.seeds for a in arms]


def train_argv(spec: RunSpec, sets: Sequence[str], *, resume: bool, preset_name: str | None = None) -> list[str]:
    """The child's command line (`python -m srdd train`, this interpreter)."""
    base = [sys.executable, "-m", "srdd", "train"]
    if resume:
        return [*base, "--resume", "--out", str(spec.path)]
    return [*base, str(spec.arm.config), "--out", str(spec.path), "--engine", "trl",
            *(["--preset", preset_name] if preset_name else []), "--set", f"seed={spec.seed}",
            *[x for s in sets for x in ("--set", s)]]


def move_aside(path: Path, runs: Path) -> Path:
    """A failed run goes to _failed/<name>-<UTC stamp>: kept for inspection, out of correlate's way."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    dest = runs / FAILED_DIR / f"{path.name}-{stamp}"
    n = 1
    while dest.exists():
        n += 1
        dest = runs / FAILED_DIR / f"{path.name}-{stamp}-{n}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    path.rename(dest)
    return dest


# --- attempts ------------------------------------------------------------------------------------------

def attempts_file(runs: Path) -> Path:
    return runs / STUDY_DIR / "attempts.jsonl"


def log_attempt(runs: Path, record: dict) -> None:
    with open(attempts_file(runs), "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, allow_nan=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def wall_times(runs: Path) -> dict[str, float]:
    """Seconds each run's child processes took, summed over its attempts (resumes included)."""
    out: dict[str, float] = {}
    path = attempts_file(runs)
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
            out[rec["run"]] = out.get(rec["run"], 0.0) + float(rec["wall_s"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a line cut by a kill: that attempt's time is lost, nothing else
    return out


# --- the child process ---------------------------------------------------------------------------------

class Stop(Exception):
    """SIGTERM or SIGHUP reached `srdd study run`: stop the child, then the study."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_stop(signum, frame):
    raise Stop(signum)


def _wait(proc: subprocess.Popen, timeout: float) -> bool:
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def stop_child(proc: subprocess.Popen, ctrl_c: bool) -> None:
    """Stop the child so that it marks its run failed (resumable); SIGKILL only if it does not stop.

    After Ctrl-C in a terminal the child has its own SIGINT already: give it time to write
    run.json before sending SIGTERM (which, arriving during that cleanup, would kill it outright).
    A second Ctrl-C or SIGTERM kills the child at once; the run is then resumed as a killed one.
    """
    try:
        if ctrl_c and _wait(proc, SIGINT_GRACE_S):
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        if not _wait(proc, SIGTERM_GRACE_S):
            proc.kill()
            proc.wait()
    except (KeyboardInterrupt, Stop):
        proc.kill()
        proc.wait()


def run_child(argv: list[str]) -> int:
    """Run one `srdd train`, its output on this terminal; on Ctrl-C/SIGTERM stop it, then re-raise."""
    proc = subprocess.Popen(argv)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop_child(proc, ctrl_c=True)
        raise
    except Stop:
        stop_child(proc, ctrl_c=False)
        raise


# --- the study loop ------------------------------------------------------------------------------------

def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _outcome(path: Path) -> RunState:
    state = inspect(path)
    if state.state is State.PENDING:
        return RunState(State.FAILED, "the trainer stopped before creating the run directory (see its error above)")
    return state


def _describe(state: RunState) -> str:
    if state.state is State.KILLED:
        return "killed (left running by a process that died)"
    if state.state is State.INTERRUPTED:
        return f"stopped ({state.reason})"
    word = state.status if state.state is State.FAILED and state.status else state.state.value
    return word + (f" ({state.reason})" if state.reason else "")


@dataclass
class Tally:
    ran: int = 0
    complete: int = 0
    not_complete: int = 0


def run_study(settings: Settings, runs: Path, specs: list[RunSpec], *, retry_failed: bool,
              say: Callable[[str], None] = print) -> Tally:
    """Run, resume or skip every spec, one after another. Ctrl-C/SIGTERM: stop the child, then raise."""
    tally = Tally()
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        for i, spec in enumerate(specs, 1):
            head = f"[{i}/{len(specs)}] {spec.name}:"
            state = inspect(spec.path)
            if state.state is State.COMPLETE:
                say(f"{head} complete, skipped")
                tally.complete += 1
                continue
            if state.state is State.LIVE:
                say(f"{head} being trained by another live process, skipped")
                tally.not_complete += 1
                continue
            if state.state is State.FAILED:
                if not retry_failed:
                    say(f"{head} {_describe(state)}; not retried (pass --retry-failed to move it to "
                        f"{FAILED_DIR}/ and run it again)")
                    tally.not_complete += 1
                    continue
                say(f"{head} {_describe(state)}; moved to {move_aside(spec.path, runs).relative_to(runs)}")
            resume = state.state.resumable
            action = "resume" if resume else "new"
            say(f"{head} {'resuming (' + _describe(state) + ')' if resume else 'running'} ...")
            started, t0 = now_iso(), time.monotonic()
            code: int | None = None
            try:
                code = run_child(train_argv(spec, settings.sets, resume=resume, preset_name=settings.preset))
            finally:
                wall = time.monotonic() - t0
                outcome = _outcome(spec.path)
                log_attempt(runs, {"run": spec.name, "action": action, "started": started, "wall_s": round(wall, 3),
                                   "exit_code": code, "status": outcome.status})
                tally.ran += 1
                if code is None:
                    say(f"{head} {_describe(outcome)} after {duration(wall)}; the next `srdd study run` resumes it")
            if outcome.state is State.COMPLETE:
                tally.complete += 1
            else:
                tally.not_complete += 1
            say(f"{head} {_describe(outcome)} in {duration(wall)}")
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return tally


class StudyLock:
    """One `srdd study run` per runs directory at a time (flock on _study/study.lock)."""

    def __init__(self, runs: Path) -> None:
        self.path = runs / STUDY_DIR / "study.lock"
        self.fd: int | None = None

    def __enter__(self) -> StudyLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = try_lock(self.path)
        if self.fd is None:
            raise SrddError(f"another srdd study run is working in {self.path.parent.parent}")
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def held_elsewhere(self) -> bool:
        return self.fd is None and lock_held(self.path)
