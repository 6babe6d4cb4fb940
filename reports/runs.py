"""Reading run directories into validated records; invalid runs keep their reason."""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from srdd.errors import SrddError

SEED_SUFFIX = re.compile(r"[-_]s(eed)?\d+$")
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

    @property
    def valid(self) -> bool:
        return self.reason is None

    @property
    def final_accuracy(self) -> float | None:
        """The `accuracy_kind` accuracy at the run's largest evaluated step (load_run checks it exists)."""
        points = self.merged if self.accuracy_kind == "merged" else self.trajectory
        return points[-1][1] if points else None

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


def _scan_metric(doc: dict, metric: str, where: str) -> list[float]:
    try:
        return [float(layer["block_output"][metric]) for layer in doc["layers"]]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{where}: no block_output.{metric} per layer ({exc})") from None


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
        info = json.loads((path / "run.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        rec.reason = f"run.json unreadable: {exc}"
        return rec
    rec.name, rec.config, rec.status = info.get("name", path.name), info.get("config", {}), info.get("status")
    if rec.status != "complete":
        rec.reason = f"status is {rec.status!r}" + (f" ({info.get('reason')})" if info.get("reason") else "")
    sigmas: dict[int, list[float]] = {}
    effective: dict[int, list[float]] = {}
    quants = set()
    try:
        lines = (path / "metrics.jsonl").read_text().splitlines()
    except OSError:
        lines = []
        rec.reason = rec.reason or "metrics.jsonl missing"
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            rec.reason = rec.reason or f"metrics.jsonl line {i} is corrupt"
            continue
        for kind, evaluation in _evaluations(r):
            (rec.merged if kind == "merged" else rec.trajectory).append((int(r["step"]), float(evaluation["accuracy"])))
            quants.add(evaluation.get("eval_quant"))
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
    if not rec.trajectory:
        rec.reason = rec.reason or "no evaluated accuracy"
    elif accuracy == "merged" and (not rec.merged or rec.merged[-1][0] != rec.trajectory[-1][0]):
        rec.reason = rec.reason or ("no merged-LoRA evaluation at the final step (a run from before eval_lora, or "
                                    "ingested): compare with --accuracy separate")
    try:
        before = json.loads((path / "scan_before.json").read_text())
        after = json.loads((path / "scan_after.json").read_text())
        rec.pre = _scan_metric(before, metric, "scan_before.json")
        rec.delta = [a - b for a, b in zip(_scan_metric(after, metric, "scan_after.json"), rec.pre)]
        rec.model, rec.fmt = before.get("model", {}).get("name"), before.get("format", {}).get("name")
    except (OSError, json.JSONDecodeError, ValueError) as exc:
        rec.reason = rec.reason or f"scans missing or unreadable ({exc})"
    return rec


def load_runs(root: Path, metric: str, accuracy: str = "merged") -> list[RunRecord]:
    if not root.is_dir():
        raise SrddError(f"{root} is not a directory of runs")
    dirs = sorted(p for p in root.iterdir() if (p / "run.json").is_file())
    if not dirs:
        raise SrddError(f"{root} holds no run directories (none has a run.json)")
    runs = [load_run(p, metric, accuracy) for p in dirs]
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
    flat = {k: v for k, v in flatten(config).items() if k not in ("seed", "name")}
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
