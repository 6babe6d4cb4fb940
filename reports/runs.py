"""Reading run directories into validated records; invalid runs keep their reason.

A run's eval_outcomes.jsonl, where it has one, must agree with its metrics (reports.outcomes); a run
without one (older runs, verl runs without validation dumps) is valid and has no per-problem outcomes."""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from reports.outcomes import outcomes_problem
from srdd.errors import SrddError
from srdd.scan.schema import check_scan_layers

SEED_SUFFIX = re.compile(r"[-_]s(eed)?\d+$")
RUN_SCHEMA = "srdd.run/v1"
LAYER_KEY = re.compile(r"[0-9]{1,6}")  # ASCII: str.isdigit() and int() also take "٣"
MAX_STEP = 10**9
MAX_RUN_FILE = 256 * 1024 * 1024  # metrics.jsonl of a long run is a few MB; /dev/zero is endless
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
ACCURACY_KINDS = ("merged", "separate")
"""Which final accuracy a report compares (DESIGN.md §3): the LoRA merged into the weights and
re-quantized, as deployed, or the fp LoRA branch beside the quantized base, as trained."""


@dataclass
class RunRecord:
    name: str
    path: Path
    config: dict = field(default_factory=dict)
    status: str = "unknown"
    reason: str | None = None  # why the run is left out of statistics
    trajectory: list[tuple[int, float]] = field(default_factory=list)
    """(step, accuracy) of every evaluation of the LoRA beside the quantized base ("separate")."""
    merged: list[tuple[int, float]] = field(default_factory=list)
    """(step, accuracy) of every evaluation with the LoRA merged and re-quantized ("merged")."""
    accuracy_kind: str = "separate"
    eval_quant: str | None = None
    pre: list[float] = field(default_factory=list)
    delta: list[float] = field(default_factory=list)
    applied_sigma: dict[int, float] = field(default_factory=dict)
    """Mean nominal sigma per layer over the run (the noise written, read back; `sigma_layers`)."""
    effective_sigma: dict[int, float] = field(default_factory=dict)
    """Mean effective sigma per layer (what the quantized GEMM sees; `sigma_layers_effective`)."""
    model: str | None = None
    fmt: str | None = None
    test_sizes: dict[str, int] = field(default_factory=dict)
    """Problems in the last evaluation of each kind ("separate", "merged"), from its `eval_samples`."""

    @property
    def valid(self) -> bool:
        return self.reason is None

    @property
    def final_accuracy(self) -> float | None:
        """The `accuracy_kind` accuracy at the run's largest evaluated step (load_run checks it exists)."""
        points = self.merged if self.accuracy_kind == "merged" else self.trajectory
        return points[-1][1] if points else None

    @property
    def test_size(self) -> int | None:
        """Problems behind the final accuracy (None when the run did not log it)."""
        return self.test_sizes.get(self.accuracy_kind)

    @property
    def final_accuracies(self) -> dict[str, float | None]:
        return {"separate": self.trajectory[-1][1] if self.trajectory else None,
                "merged": self.merged[-1][1] if self.merged else None}

    @property
    def sigma_varies_by_design(self) -> bool:
        """Whether the config asks for different sigma on different noised layers (unequal multipliers or
        zone overrides): only then is a per-layer sigma a variable worth correlating with anything."""
        noise = self.config.get("noise") or {}
        return len(set((noise.get("layer_multipliers") or {}).values())) > 1 or bool(noise.get("zone_overrides"))

    @property
    def group(self) -> str:
        return SEED_SUFFIX.sub("", self.name)


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "layer_multipliers":
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _finite(value, where: str, *, fraction: bool = False) -> float:
    """A number from a run file: finite, and a fraction 0..1 where DESIGN.md §4 says so."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} is {value!r}, not a finite number")
    if fraction and not 0.0 <= value <= 1.0:
        raise ValueError(f"{where} is {value!r}; accuracies are fractions 0..1")
    return float(value)


def _scan_metric(doc: dict, metric: str) -> list[float]:
    """Per-layer block_output values of a scan that check_scan_layers accepted."""
    return [float(layer["block_output"][metric]) for layer in doc["layers"]]


def _metrics_line(line: str, i: int) -> dict:
    """One metrics.jsonl record, checked field by field (ValueError names the line and field)."""
    where = f"metrics.jsonl line {i}"
    try:
        r = json.loads(line)
    except json.JSONDecodeError:
        raise ValueError(f"{where} is corrupt") from None
    if not isinstance(r, dict):
        raise ValueError(f"{where} is a {type(r).__name__}, not an object")
    step = r.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= MAX_STEP:
        raise ValueError(f"{where}: step is {step!r}, not an integer in 0..{MAX_STEP}")
    if r.get("accuracy") is not None:
        _finite(r["accuracy"], f"{where}: accuracy", fraction=True)
    merged = r.get("eval_merged")
    if merged is not None:
        if not isinstance(merged, dict):
            raise ValueError(f"{where}: eval_merged is a {type(merged).__name__}, not an object")
        if merged.get("accuracy") is not None:
            _finite(merged["accuracy"], f"{where}: eval_merged.accuracy", fraction=True)
    for name in ("sigma_layers", "sigma_layers_effective"):
        layers = r.get(name)
        if layers is None:
            continue
        if not isinstance(layers, dict):
            raise ValueError(f"{where}: {name} is a {type(layers).__name__}, not an object")
        for key, value in layers.items():
            if not LAYER_KEY.fullmatch(str(key)):
                raise ValueError(f"{where}: {name} key {key!r} is not a layer index")
            _finite(value, f"{where}: {name}[{key}]")
    return r


def read_run_file(path: Path) -> str:
    """A run's own file as text: a regular file (never a symlink, which could lead to /dev/zero or
    anywhere), of bounded size, UTF-8. ValueError says why not."""
    if path.is_symlink() or not path.is_file():
        raise ValueError(f"{path.name} is {'a symlink' if path.is_symlink() else 'missing or not a file'}")
    with open(path, "rb") as fh:
        data = fh.read(MAX_RUN_FILE + 1)
    if len(data) > MAX_RUN_FILE:
        raise ValueError(f"{path.name} is larger than {MAX_RUN_FILE} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path.name} is not UTF-8 text (a binary file?)") from None


def _read_info(path: Path) -> dict:
    try:
        info = json.loads(read_run_file(path / "run.json"))
    except (OSError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"run.json unreadable: {exc}") from None
    if not isinstance(info, dict):
        raise ValueError(f"run.json is a {type(info).__name__}, not an object")
    if info.get("schema") != RUN_SCHEMA:
        raise ValueError(f"run.json: schema {str(info.get('schema'))[:40]!r}, expected {RUN_SCHEMA}")
    name, config = info.get("name", path.name), info.get("config", {})
    if not isinstance(name, str) or not isinstance(config, dict):
        raise ValueError("run.json: name must be a string and config an object")
    if CONTROL_CHARS.search(name):
        raise ValueError("run.json: the name holds control characters (a line break?)")
    if not isinstance(info.get("status"), str) or not isinstance(info.get("reason"), (str, type(None))):
        raise ValueError("run.json: status must be a string and reason a string or null")
    noise = config.get("noise")
    if noise is not None and not (isinstance(noise, dict) and isinstance(noise.get("layer_multipliers") or {}, dict)
                                  and isinstance(noise.get("zone_overrides") or [], list)):
        raise ValueError("run.json: config.noise must be an object with layer_multipliers an object")
    return info


def _evaluations(record: dict) -> list[tuple[str, dict]]:
    """(eval_lora, evaluation) pairs of one metrics line: its own accuracy (runs before eval_lora existed
    evaluated the LoRA separately) and the final step's `eval_merged`."""
    out = []
    if record.get("accuracy") is not None:
        out.append((record.get("eval_lora") or "separate", record))
    if isinstance(record.get("eval_merged"), dict) and record["eval_merged"].get("accuracy") is not None:
        out.append(("merged", record["eval_merged"]))
    return out


def load_run(path: Path, metric: str, accuracy: str = "merged") -> RunRecord:
    if accuracy not in ACCURACY_KINDS:
        raise SrddError(f"accuracy must be one of {list(ACCURACY_KINDS)}, got {accuracy!r}")
    rec = RunRecord(name=path.name, path=path, accuracy_kind=accuracy)
    try:
        info = _read_info(path)
    except ValueError as exc:
        rec.reason = str(exc)
        return rec
    rec.name, rec.config, rec.status = info.get("name", path.name), info.get("config", {}), info.get("status")
    if rec.status != "complete":
        rec.reason = f"status is {rec.status!r}" + (f" ({info.get('reason')})" if info.get("reason") else "")
    sigmas: dict[int, list[float]] = {}
    effective: dict[int, list[float]] = {}
    quants = set()
    try:
        lines = read_run_file(path / "metrics.jsonl").splitlines()
    except (OSError, ValueError) as exc:
        lines = []
        rec.reason = rec.reason or f"metrics.jsonl missing or unreadable ({exc})"
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = _metrics_line(line, i)
        except ValueError as exc:
            rec.reason = rec.reason or str(exc)
            continue
        for kind, evaluation in _evaluations(r):
            (rec.merged if kind == "merged" else rec.trajectory).append((int(r["step"]), float(evaluation["accuracy"])))
            quants.add(evaluation.get("eval_quant"))
            samples = evaluation.get("eval_samples")
            if isinstance(samples, int) and not isinstance(samples, bool) and samples > 0:
                rec.test_sizes[kind] = samples
        for key, into in (("sigma_layers", sigmas), ("sigma_layers_effective", effective)):
            for layer, s in (r.get(key) or {}).items():
                into.setdefault(int(layer), []).append(float(s))
    rec.trajectory.sort()
    rec.merged.sort()
    rec.applied_sigma = {k: statistics.fmean(v) for k, v in sigmas.items()}
    rec.effective_sigma = {k: statistics.fmean(v) for k, v in effective.items()}
    if len(quants) > 1:
        rec.reason = rec.reason or f"accuracies measured under mixed quant modes {sorted(map(str, quants))}"
    rec.eval_quant = next(iter(quants)) if len(quants) == 1 else None
    if rec.reason is None:
        rec.reason = outcomes_problem(path, {kind: points[-1] for kind, points in (("separate", rec.trajectory),
                                                                                   ("merged", rec.merged)) if points},
                                      rec.eval_quant)
    if not rec.trajectory:
        rec.reason = rec.reason or "no evaluated accuracy"
    elif accuracy == "merged" and (not rec.merged or rec.merged[-1][0] != rec.trajectory[-1][0]):
        rec.reason = rec.reason or ("no merged-LoRA evaluation at the final step (a run from before eval_lora, or "
                                    "ingested): compare with --accuracy separate")
    try:
        before = json.loads((path / "scan_before.json").read_text())
        after = json.loads((path / "scan_after.json").read_text())
        check_scan_layers(before, "scan_before.json")
        check_scan_layers(after, "scan_after.json")
        rec.pre = _scan_metric(before, metric)
        rec.delta = [a - b for a, b in zip(_scan_metric(after, metric), rec.pre)]
        model, fmt = before.get("model"), before.get("format")
        rec.model = model.get("name") if isinstance(model, dict) else None
        rec.fmt = fmt.get("name") if isinstance(fmt, dict) else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, SrddError) as exc:
        rec.reason = rec.reason or f"scans missing or unreadable ({exc})"
    return rec


def run_dirs(root: Path) -> list[Path]:
    """The run directories in `root` (those holding a run.json), in name order."""
    if not root.is_dir():
        raise SrddError(f"{root} is not a directory of runs")
    return sorted(p for p in root.iterdir() if (p / "run.json").is_file())


def load_runs(root: Path, metric: str, accuracy: str = "merged") -> list[RunRecord]:
    dirs = run_dirs(root)
    if not dirs:
        raise SrddError(f"{root} holds no run directories (none has a run.json)")
    runs = [load_run(p, metric, accuracy) for p in dirs]
    names = [r.name for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        where = [r.path.name for r in runs if r.name == twice[0]]
        raise SrddError(f"{root}: two runs are named {twice[0]!r} (directories {', '.join(where)}); a name is one run "
                        "(seeds are told apart by the name's -s<seed> suffix)")
    valid = [r for r in runs if r.valid]
    if len(valid) < 2:
        raise SrddError(f"{root}: {len(valid)} valid run(s) of {len(runs)}; a comparison needs at least 2"
                        + "".join(f"\n  {r.name}: {r.reason}" for r in runs if not r.valid))
    for attr, what in (("model", "models"), ("fmt", "formats"), ("eval_quant", "quant modes")):
        values = sorted({str(getattr(r, attr)) for r in valid})
        if len(values) > 1:
            raise SrddError(f"runs from different {what} cannot be compared: {values}")
    return runs


@dataclass
class Group:
    name: str
    runs: list[RunRecord]

    @property
    def accuracies(self) -> list[float]:
        return [r.final_accuracy for r in self.runs]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.stdev(self.accuracies) if len(self.runs) > 1 else 0.0

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def config(self) -> dict:
        return self.runs[0].config


def config_key(config: dict) -> str:
    """Runs with equal keys differ only in seed. A key set to null reads as absent (a run recorded before a new
    optional setting existed groups with the runs after it, as config_diff also sees no difference)."""
    flat = {k: v for k, v in flatten(config).items() if k not in ("seed", "name") and v is not None}
    return json.dumps(flat, sort_keys=True, default=str)


def group_runs(runs: list[RunRecord]) -> list[Group]:
    """Runs whose configs differ only in seed form one group."""
    groups: dict[str, list[RunRecord]] = {}
    for r in runs:
        groups.setdefault(config_key(r.config), []).append(r)
    out = []
    for members in groups.values():
        names = sorted({m.group for m in members})
        out.append(Group("+".join(names), sorted(members, key=lambda m: m.name)))
    return sorted(out, key=lambda g: g.name)


def config_diff(a: dict, b: dict) -> dict[str, tuple]:
    fa, fb = flatten(a), flatten(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb))
            if k not in ("seed", "name") and fa.get(k) != fb.get(k)}
