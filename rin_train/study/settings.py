"""A study's settings: the suite, its arms, the seeds and the `--set` overrides, recorded once.

One study = one setting: a later call with other settings is refused, so the runs of a
directory can always be compared with each other. Everything that can be checked before
the first run is checked here: every arm's name, every arm's config for every seed (as
`srdd train` will resolve it), and every seed.

An arm is identified by its config file's bytes and by its config as resolved (`resolved`):
the second carries what the file only refers to (the multipliers of `noise.multipliers_file`),
so editing the multipliers between two seeds is a change of setting like editing the config.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from reports.compare import Method
from reports.hypotheses import defined, pick_family
from rin_train.presets import pinned
from rin_train.rundir import MAX_SEED, now_iso
from rin_train.study.layout import CONTROL, check_arm_names, shown, study_dir
from srdd.errors import SrddError
from srdd.jsonio import dumps_json, write_text_atomic

SCHEMA = "srdd.study/v1"
RESERVED_SETS = ("seed", "name", "engine")  # given by --seeds, the run directory and the study itself
ANALYSES = tuple(m.value for m in Method)
"""What a study may declare for its report (reports.settings reads it): pooled only as such a choice (DESIGN §3)."""
SEED = re.compile(r"[0-9]+")  # ASCII digits only: int() also takes "٣" and "1_0"


@dataclass(frozen=True)
class Arm:
    name: str
    config: Path
    sha256: str
    steps: int  # grpo.steps of the resolved config (what "steps logged / total" counts to)
    resolved: str | None = None  # sha256 of the resolved config (`config_digest`); None in older study files

    def to_dict(self, base: Path) -> dict:
        return {"name": self.name, "config": os.path.relpath(self.config, base), "sha256": self.sha256,
                "steps": self.steps, "resolved_sha256": self.resolved}


@dataclass(frozen=True)
class Settings:
    """What makes two calls the same study: the suite's files, the seeds, the preset and the --set overrides."""

    suite: Path
    suite_sha256: str
    seeds: tuple[int, ...]
    sets: tuple[str, ...]
    arms: tuple[Arm, ...]
    preset: str | None = None
    analysis: str | None = None  # declared analysis of the report (reports.settings reads it); None: the default
    margin_pp: float | None = None  # declared smallest effect of interest, pp; None: the suite's gap or 5 pp
    hypotheses: tuple[str, ...] | None = None  # declared confirmatory family; None: the suite's, all in one
    declared_arms: tuple[str, ...] | None = None  # declared --arms (the study runs these alone); None: all

    def __post_init__(self) -> None:
        check_seeds(self.seeds)
        check_arm_names([a.name for a in self.arms if a.name != CONTROL], "the study's arms")
        check_declared(self.analysis, self.margin_pp)
        keys = self.hypotheses
        if keys is not None and not (isinstance(keys, tuple) and keys and all(isinstance(k, str) for k in keys)):
            raise SrddError(f"hypotheses {shown(keys)}: a declared family is a list of hypothesis keys")

    def identity(self) -> dict:
        """The part compared between calls (paths may move; contents may not change)."""
        declared = {k: v for k, v in (("--analysis", self.analysis), ("--margin", self.margin_pp),
                                      ("--hypotheses", self.hypotheses and list(self.hypotheses)),
                                      ("--arms", self.declared_arms and list(self.declared_arms)))
                    if v is not None}
        return {"suite.json": self.suite_sha256, "seeds": list(self.seeds), "--preset": self.preset,
                "--set": list(self.sets), "arms": {a.name: a.sha256 for a in self.arms}, **declared}

    def to_dict(self, base: Path) -> dict:
        """Paths relative to `base`, the folder of the file that stores them: a runs directory can be moved
        or committed with its suite (from_dict resolves them against that folder again)."""
        base = base.resolve()
        return {"schema": SCHEMA, "created": now_iso(), "suite": os.path.relpath(self.suite, base),
                "suite_sha256": self.suite_sha256, "seeds": list(self.seeds), "preset": self.preset,
                "sets": list(self.sets), "arms": [a.to_dict(base) for a in self.arms], "analysis": self.analysis,
                "margin_pp": self.margin_pp, "hypotheses": self.hypotheses and list(self.hypotheses),
                **({} if self.declared_arms is None else {"declared_arms": list(self.declared_arms)})}

    @classmethod
    def from_dict(cls, doc: dict, where: Path) -> Settings:
        try:
            if doc["schema"] != SCHEMA:
                raise SrddError(f"{where}: schema {shown(doc['schema'])}, expected {SCHEMA}")
            base = where.parent  # an absolute path (files written before paths were relative) stays as it is
            arms = tuple(Arm(a["name"], _joined(base, a["config"]), a["sha256"], int(a["steps"]),
                             a.get("resolved_sha256")) for a in doc["arms"])
            preset_name = doc.get("preset")  # an unversioned record predates versions: pinned to version 1
            keys = doc.get("hypotheses")  # absent from records made before studies declared a family
            chosen = doc.get("declared_arms")  # absent unless the study declared --arms
            return cls(_joined(base, doc["suite"]), doc["suite_sha256"], tuple(doc["seeds"]), tuple(doc["sets"]), arms,
                       None if preset_name is None else pinned(preset_name, recorded=preset_name),
                       doc.get("analysis"), doc.get("margin_pp"), tuple(keys) if isinstance(keys, list) else keys,
                       None if chosen is None else tuple(chosen))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SrddError(f"{where}: not a study file ({type(exc).__name__}: {shown(str(exc))})") from None


def _joined(base: Path, path: str) -> Path:
    return Path(os.path.normpath(base / path))


def parse_seeds(text: str) -> tuple[int, ...]:
    words = [t.strip() for t in text.split(",")]
    if not all(SEED.fullmatch(w) for w in words):
        raise SrddError(f"--seeds: expected comma-separated integers such as 0,1,2, got {shown(text)}")
    seeds = tuple(int(w) for w in words)
    check_seeds(seeds)
    return seeds


def check_seeds(seeds: tuple[int, ...]) -> None:
    ok = all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seeds)
    if not seeds or not ok or len(set(seeds)) != len(seeds):
        raise SrddError(f"--seeds: distinct integers from 0 to {MAX_SEED}, got "
                        f"{shown(','.join(map(str, seeds))) if seeds else 'none'}")


def check_declared(analysis: str | None, margin_pp: float | None) -> None:
    """The report settings a study may declare: checked before any arm is resolved."""
    if analysis is not None and analysis not in ANALYSES:
        raise SrddError(f"--analysis {shown(analysis)}: choose one of {', '.join(ANALYSES)}")
    ok = isinstance(margin_pp, (int, float)) and not isinstance(margin_pp, bool) and math.isfinite(margin_pp)
    if margin_pp is not None and not (ok and 0 < margin_pp < 100):
        raise SrddError(f"--margin {shown(margin_pp)}: a difference in percentage points, in (0, 100) "
                        "(the range srdd correlate accepts)")


def check_sets(sets: Sequence[str]) -> None:
    for s in sets:
        key = s.split("=", 1)[0].strip()
        if "=" not in s or not key:
            raise SrddError(f"--set {shown(s)}: expected KEY=VALUE")
        if key in RESERVED_SETS:
            raise SrddError(f"--set {shown(s)}: a study sets {key} itself (seeds with --seeds, names from the arm "
                            "and seed, engine trl)")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def config_digest(config: dict) -> str:
    """sha256 of a resolved config as run.json records it, less its seed and name (which differ by run)."""
    plain = json.loads(dumps_json(config))  # the JSON round trip run.json makes (int keys become strings)
    plain.pop("seed", None)
    plain.pop("name", None)
    return sha256_text(json.dumps(plain, sort_keys=True, allow_nan=False))


def _experiments(doc: object, path: Path) -> list[dict]:
    if not isinstance(doc, dict) or not isinstance(doc.get("experiments"), list):
        raise SrddError(f"{path}: not a srdd suite (no 'experiments' list)")
    exps = doc["experiments"]
    for i, e in enumerate(exps):
        if not isinstance(e, dict) or not isinstance(e.get("config"), str) or not e["config"]:
            raise SrddError(f"{path}: experiments[{i}] needs a 'config' file name")
        prio = e.get("priority")
        if isinstance(prio, bool) or not isinstance(prio, (int, float)) or not math.isfinite(prio):
            raise SrddError(f"{path}: experiments[{i}].priority must be a finite number, got {shown(prio)}")
    check_arm_names([e.get("name") for e in exps], str(path))
    return sorted(exps, key=lambda e: e["priority"])


def read_suite(suite: Path) -> tuple[dict, list[tuple[str, Path]]]:
    """suite.json and its experiments' config files, in priority order; every arm name checked here, once."""
    if not suite.is_dir():
        raise SrddError(f"suite directory {suite} does not exist (write one with srdd calibrate SCAN -o M.yaml "
                        "--suite DIR)")
    path = suite / "suite.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SrddError(f"{suite} holds no suite.json; is it a suite written by srdd calibrate --suite?") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise SrddError(f"{path}: not a srdd suite ({type(exc).__name__}: {shown(str(exc))})") from None
    configs = [(e["name"], suite / e["config"]) for e in _experiments(doc, path)]
    if not configs:
        raise SrddError(f"{path} lists no experiments")
    for name, config in configs:
        if not config.is_file():
            raise SrddError(f"{path} lists {name} but {config} does not exist")
    return doc, configs


def control_config(baseline: Path) -> dict:
    """The baseline config with noise switched off: it differs from the baseline in noise.enabled alone."""
    from rin_train.run_config import read_config_file

    doc = read_config_file(baseline)
    if not isinstance(doc.get("noise"), dict):
        raise SrddError(f"{baseline}: expected a run config with a noise section")
    return {**doc, "name": CONTROL, "noise": {**doc["noise"], "enabled": False}}


def control_text(config: dict, baseline: Path) -> str:
    return (f"# the study's control arm: {baseline.name} without noise (written by srdd study run)\n"
            + yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=120))


def resolve_arm(config: Path | dict, sets: Sequence[str], seeds: Sequence[int],
                preset_name: str | None = None) -> tuple[int, str]:
    """Load an arm's config for every seed as `srdd train` will (every error before any run starts):
    its grpo.steps and `config_digest`."""
    from rin_train.presets import preset
    from rin_train.run_config import check_against_model, load_run_config
    from rin_train.train import model_num_layers

    where = config.name if isinstance(config, Path) else f"the {CONTROL} arm"
    try:
        cfgs = [load_run_config(config, [*sets, f"seed={seed}", "engine=trl"], preset=preset(preset_name))
                for seed in seeds]
        check_against_model(cfgs[0], model_num_layers(cfgs[0].model))
    except SrddError as exc:
        raise SrddError(f"{where} with the study's --set: {exc}") from None
    return cfgs[0].grpo.steps, config_digest(cfgs[0].to_dict())


def declared_family(doc: dict, suite: Path, arms: Sequence[str], keys: Sequence[str], *,
                    chosen: bool = False) -> tuple[str, ...]:
    """A declared confirmatory family as the study records it (the suite's order), refused when it names a
    hypothesis the suite does not know or an arm the study does not run (`chosen`: `arms` are --arms')."""
    family = pick_family(keys, defined(doc, str(suite / "suite.json")), "--hypotheses")
    for h in family:
        missing = ", ".join(arm for arm in (h.treatment, h.control) if arm not in arms)
        if missing:
            why = (f"--arms leaves out {missing} (the study's arms: " if chosen
                   else f"the suite has no arm {missing} (its arms: ")
            raise SrddError(f"--hypotheses: {h.key} compares {h.treatment} with {h.control}, and {why}"
                            f"{', '.join(arms)})")
    return tuple(h.key for h in family)


def build_settings(suite: Path, runs: Path, seeds: tuple[int, ...], sets: tuple[str, ...],
                   preset_name: str | None = None, *, analysis: str | None = None,
                   margin_pp: float | None = None, hypotheses: Sequence[str] | None = None,
                   arms: Sequence[str] | None = None) -> tuple[Settings, str]:
    """The settings of this call, every arm validated through rin_train, and the text of control.yaml.

    Nothing is written: `open_study` records them once they are known to be good. The preset is pinned to
    a version: the one the study in `runs` recorded, else the latest (rin_train.presets). `arms` declares
    the study's arms (the control by its name), in the suite's order; None: the control and every arm.
    """
    check_sets(sets)
    preset_name = pinned(preset_name, recorded=load_settings(runs).preset if study_file(runs).is_file() else None)
    check_seeds(seeds)
    check_declared(analysis, margin_pp)
    doc, configs = read_suite(suite)
    baseline = configs[0][1]
    control = control_config(baseline)  # the baseline's without noise, whichever arms the study runs
    names = [CONTROL, *(name for name, _ in configs)]
    chosen = None if arms is None else declared_arms(arms, names)
    if chosen is not None:
        configs = [(name, path) for name, path in configs if name in chosen]
    if hypotheses is not None:
        hypotheses = declared_family(doc, suite, chosen or names, hypotheses, chosen=chosen is not None)
    text = control_text(control, baseline)
    out = [Arm(CONTROL, (study_dir(runs) / "control.yaml").resolve(), sha256_text(text),
               *resolve_arm(control, sets, seeds, preset_name))] if chosen is None or CONTROL in chosen else []
    out += [Arm(name, path.resolve(), hashlib.sha256(path.read_bytes()).hexdigest(),
                *resolve_arm(path, sets, seeds, preset_name)) for name, path in configs]
    suite_sha = hashlib.sha256((suite / "suite.json").read_bytes()).hexdigest()
    return Settings(suite.resolve(), suite_sha, seeds, sets, tuple(out), preset_name, analysis, margin_pp,
                    hypotheses, chosen), text


def declared_arms(arms: Sequence[str], names: Sequence[str]) -> tuple[str, ...]:
    """--arms in the suite's order, refused when it names an arm the suite lacks or none at all."""
    unknown = [a for a in arms if a not in names]
    if unknown or not arms:
        raise SrddError(f"--arms: {'unknown arm(s) ' + ', '.join(unknown) if unknown else 'no arm named'}; the "
                        f"suite's arms: {', '.join(names)}")
    return tuple(n for n in names if n in arms)


def study_file(runs: Path) -> Path:
    return study_dir(runs) / "study.json"


def load_settings(runs: Path) -> Settings:
    path = study_file(runs)
    if not path.is_file():
        raise SrddError(f"{runs} holds no study ({path} missing); start one with srdd study run SUITE --seeds ... "
                        f"--runs {runs}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SrddError(f"{path} is not valid JSON: {exc}") from None
    return Settings.from_dict(doc, path)


def mismatch(recorded: Settings, wanted: Settings) -> list[str]:
    old, new = recorded.identity(), wanted.identity()
    lines = []
    for key in {**old, **new}:  # the declared --analysis/--margin appear only where declared
        if old.get(key) != new.get(key):
            if key == "arms":
                changed = sorted(n for n in {*old[key], *new[key]} if old[key].get(n) != new[key].get(n))
                lines.append(f"the config files of {', '.join(changed)} changed")
            elif key == "suite.json":
                lines.append("suite.json changed (a new calibration is a new study)")
            else:
                lines.append(f"{key}: recorded {old.get(key)}, now {new.get(key)}")
    now = {a.name: a.resolved for a in wanted.arms}
    moved = sorted(a.name for a in recorded.arms  # None: a study file from before resolved configs were recorded
                   if a.resolved is not None and a.resolved != now.get(a.name, a.resolved))
    if moved and not lines:
        lines.append(f"the resolved configs of {', '.join(moved)} changed (a file they refer to, such as "
                     "noise.multipliers_file, was edited)")
    return lines


def refuse_other_settings(runs: Path, settings: Settings) -> None:
    if study_file(runs).is_file():
        diff = mismatch(load_settings(runs), settings)
        if diff:
            raise SrddError(f"{runs} holds a study with other settings ({'; '.join(diff)}); one runs directory "
                            f"holds one study: repeat its settings (srdd study status {runs} shows them) or "
                            "choose another --runs")


def open_study(runs: Path, settings: Settings, control: str) -> Settings:
    """Record the settings on the first call; on later calls, refuse other settings.

    Returns this call's settings: the same study, with the paths where its files are now."""
    refuse_other_settings(runs, settings)  # again: another call may have recorded the study meanwhile
    path = study_file(runs)
    path.parent.mkdir(parents=True, exist_ok=True)
    control_path = study_dir(runs) / "control.yaml"
    if not control_path.is_file() or control_path.read_text(encoding="utf-8") != control:
        write_text_atomic(control_path, control, force=True)  # exactly the text whose sha256 is recorded
    if not path.is_file():
        write_text_atomic(path, dumps_json(settings.to_dict(path.parent)))
    return settings
