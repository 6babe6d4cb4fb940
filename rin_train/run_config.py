"""The resolved run configuration: YAML (possibly partial) + presets + --set overrides.

Unknown keys anywhere are errors that list the valid keys; every section is a
dataclass validated at construction, so a bad config fails before a model is
loaded (the published study lost runs to silently dropped keys).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rin_train.config_base import from_dict
from rin_train.noise import NoiseConfig
from srdd.errors import SrddError
from srdd.qlinear import DEFAULT_EXCLUDE, LinearQuantConfig


@dataclass(frozen=True)
class TaskConfig:
    name: str = "arithmetic"
    train_file: str | None = None
    test_file: str | None = None
    train_size: int = 512
    test_size: int = 64

    def __post_init__(self) -> None:
        if self.name not in ("arithmetic", "gsm8k"):
            raise SrddError(f"task.name must be 'arithmetic' or 'gsm8k', got {self.name!r}")
        if self.name == "gsm8k" and not (self.train_file and self.test_file):
            raise SrddError("task gsm8k needs task.train_file and task.test_file (verl parquet or JSONL)")
        if self.train_size < 1 or self.test_size < 1:
            raise SrddError("task.train_size and task.test_size must be >= 1")


@dataclass(frozen=True)
class QuantSection:
    format: str = "mxfp4"
    mode: str = "w4a4"
    options: dict = field(default_factory=dict)
    exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))

    def linear_config(self) -> LinearQuantConfig:
        return LinearQuantConfig(self.format, self.mode, dict(self.options), tuple(self.exclude))

    def __post_init__(self) -> None:
        self.linear_config()


@dataclass(frozen=True)
class LoraConfig:
    r: int = 32
    alpha: int = 64
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                                "gate_proj", "up_proj", "down_proj"])

    def __post_init__(self) -> None:
        if self.r < 1:
            raise SrddError(f"lora.r must be >= 1, got {self.r}")


@dataclass(frozen=True)
class GrpoConfig:
    steps: int = 58
    num_generations: int = 8
    batch_size: int = 8
    max_completion_length: int = 256
    learning_rate: float = 1e-5
    temperature: float = 1.0
    beta: float = 0.0
    save_every: int = 10
    stall_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise SrddError(f"grpo.steps must be >= 1, got {self.steps}")
        if self.num_generations < 2:
            raise SrddError("grpo.num_generations must be >= 2 (GRPO compares completions within a group)")
        if self.batch_size % self.num_generations:
            raise SrddError(f"grpo.batch_size {self.batch_size} must be a multiple of num_generations "
                            f"{self.num_generations}")


@dataclass(frozen=True)
class EvalConfig:
    every: int = 10
    samples: int = 64
    max_new_tokens: int = 256

    def __post_init__(self) -> None:
        if self.every < 1 or self.samples < 1 or self.max_new_tokens < 1:
            raise SrddError("eval.every, eval.samples and eval.max_new_tokens must be >= 1")


@dataclass(frozen=True)
class ScanSection:
    before: bool = True
    after: bool = True
    samples: int = 8
    max_tokens: int = 128


SECTIONS = {"task": TaskConfig, "quant": QuantSection, "lora": LoraConfig, "grpo": GrpoConfig,
            "eval": EvalConfig, "noise": NoiseConfig, "scan": ScanSection}
TOP_LEVEL = {"name", "seed", "model", "engine", *SECTIONS}


@dataclass(frozen=True)
class RunConfig:
    name: str
    seed: int
    model: str
    engine: str
    task: TaskConfig
    quant: QuantSection
    lora: LoraConfig
    grpo: GrpoConfig
    eval: EvalConfig
    noise: NoiseConfig
    scan: ScanSection

    def to_dict(self) -> dict:
        d = {k: (asdict(v) if k not in ("noise",) and hasattr(v, "__dataclass_fields__") else v)
             for k, v in vars(self).items()}
        d["noise"] = self.noise.to_dict()
        return d


def _apply_set(data: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise SrddError(f"--set expects key=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    value = yaml.safe_load(raw)
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SrddError(f"--set {key}: {part} is not a section")
    node[parts[-1]] = value


def load_run_config(source: str | Path | dict | None, *, preset: dict | None = None,
                    sets: list[str] = (), name: str | None = None) -> RunConfig:
    data: dict[str, Any] = copy.deepcopy(preset or {})
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise SrddError(f"config {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SrddError(f"config {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise SrddError(f"config {path}: expected a mapping at the top level")
        data = _merge(data, loaded)
        data.setdefault("name", path.stem)
    elif isinstance(source, dict):
        data = _merge(data, source)
    for assignment in sets:
        _apply_set(data, assignment)
    unknown = sorted(set(data) - TOP_LEVEL)
    if unknown:
        raise SrddError(f"config: unknown key(s) {unknown}; valid keys: {', '.join(sorted(TOP_LEVEL))}")
    if data.get("engine", "trl") not in ("trl", "verl"):
        raise SrddError(f"engine must be 'trl' or 'verl', got {data.get('engine')!r}")
    sections = {k: from_dict(cls, data.get(k), k) for k, cls in SECTIONS.items()}
    return RunConfig(name=str(name or data.get("name") or "run"), seed=int(data.get("seed", 0)),
                     model=str(data.get("model", "smollm2")), engine=data.get("engine", "trl"), **sections)


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "layer_multipliers" else v
    return out
