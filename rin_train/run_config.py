"""The resolved run configuration: YAML (possibly partial) + preset + `--set` overrides.

The contract is the dataclasses below (each field documents itself) and the
`config` block of run.json (DESIGN.md §4), which is `RunConfig.to_dict()` and
reads back through `config_for_resume`. A config file may be partial: every
missing key takes its default; an unknown key anywhere is an error that names it
and lists the valid keys; every value is type-checked; cross-section rules are
checked here, before a model is loaded (the published study lost runs to
silently dropped keys and to settings that only failed hours in).

Top level: `name`, `seed`, `model` (smollm2 | tiny | tiny-echo | HF dir | .gguf), `engine`
(trl | verl) and the sections `task` (TaskConfig), `quant` (QuantConfig),
`lora` (LoraConfig), `grpo` (GrpoConfig), `eval` (EvalConfig), `noise`
(rin_train.noise.NoiseConfig), `scan` (ScanConfig). Layer-dependent checks
(multipliers or target layers the model lacks) need the model's depth and run in
`check_against_model`, still before the run directory is created.

Precedence: defaults < preset < config file < --set.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.dataclasses import dataclass as pydantic_dataclass

from rin_train.noise import NoiseConfig
from rin_train.rundir import MAX_SEED
from rin_train.tasks import INSTRUCTION
from srdd.errors import SrddError
from srdd.yamlio import load_yaml
from srdd.mathdata import DIFFICULTIES
from srdd.qlinear import DEFAULT_EXCLUDE, MATMUL_DTYPES, LinearQuantConfig, QuantMode, bf16_exact

ENGINES = ("trl", "verl")
POLICY_DTYPES = ("float32", "bfloat16")
TASKS = ("arithmetic", "gsm8k")
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# --- validation (pydantic v2) -----------------------------------------------------------------------
# Every section is a pydantic dataclass: strict types (no "3" for 3, no 1.0 for an int, no bool for a
# number), finite floats only (NaN/Infinity in YAML, `.inf`, never reach a run), ranges declared on the
# field, and upper bounds on every size, so no value can ask for unbounded memory or time before a run
# directory exists. Cross-field rules stay in __post_init__, which pydantic calls after the fields
# validate. NoiseConfig belongs to rin_train.noise (a plain dataclass); its input is checked at this
# boundary by a schema derived from its fields (`_NOISE_INPUT`).

STRICT = ConfigDict(strict=True, allow_inf_nan=False)
MAX_STEPS = 1_000_000
MAX_TOKENS = 131_072
MAX_BATCH = 65_536
MAX_PROBLEMS = 10_000_000
MAX_LAYER = 65_535

PositiveInt = Annotated[int, Field(ge=1)]
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]
Tokens = Annotated[int, Field(ge=1, le=MAX_TOKENS)]
BatchSize = Annotated[int, Field(ge=1, le=MAX_BATCH)]
NonNegative = Annotated[float, Field(ge=0)]


def _layer_index(value: Any) -> Any:
    """A layer key as YAML (int) or JSON (a string of digits, run.json on --resume) writes it; 1.7 is not one."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value


LayerIndex = Annotated[int, BeforeValidator(_layer_index), Field(ge=0, le=MAX_LAYER)]


def _error_text(exc: ValidationError, where: str) -> str:
    """One line per pydantic error, joined: `grpo.learning_rate: Input should be a finite number, got inf`."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = where
        for part in err["loc"]:
            named = isinstance(part, str) and part.isidentifier()
            loc += " (key)" if part == "[key]" else f".{part}" if named else f"[{part}]"
        loc = loc.lstrip(".")
        got = err.get("input")
        parts.append(f"{loc}: {err['msg']}" + ("" if isinstance(got, dict) else f", got {got!r}"))
    return "; ".join(parts)


def section_from_dict(cls: type, data: Any, where: str):
    """Build section `cls` from a (partial) mapping: unknown keys, wrong types and bad values are SrddErrors."""
    if data is None:
        data = {}
    if dataclasses.is_dataclass(data):
        return data
    if not isinstance(data, dict):
        raise SrddError(f"{where}: expected a mapping, got {type(data).__name__} {data!r}")
    names = [f.name for f in fields(cls)]
    unknown = sorted(set(map(str, data)) - set(names))
    if unknown:
        raise SrddError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(names)}")
    schema = _INPUT_SCHEMAS.get(cls)
    try:
        if schema is not None:
            data = schema.validate_python(data).model_dump(exclude_unset=True)
        return cls(**data)
    except ValidationError as exc:
        raise SrddError(_error_text(exc, where)) from None
    except TypeError as exc:
        raise SrddError(f"{where}: {exc}") from None


def _input_schema(cls: type, overrides: dict[str, Any]) -> TypeAdapter:
    """A strict pydantic schema of a plain dataclass's fields (`overrides` tighten some), all optional."""
    hints = typing.get_type_hints(cls)
    spec = {f.name: (overrides.get(f.name, hints[f.name]), None) for f in fields(cls)}
    model = create_model(f"{cls.__name__}Input", __config__=ConfigDict(**STRICT, extra="forbid"), **spec)
    return TypeAdapter(model)


class ZoneOverrideInput(BaseModel):
    """One noise.zone_overrides entry: a named band of layers with its own sigma range."""

    model_config = ConfigDict(**STRICT, extra="forbid")
    name: str
    layers: Annotated[list[LayerIndex], Field(min_length=1)]
    sigma_start: NonNegative
    sigma_end: NonNegative


_NOISE_INPUT = _input_schema(NoiseConfig, {
    "num_stages": Annotated[int, Field(ge=1, le=MAX_STEPS)],
    "sigma_start": NonNegative, "sigma_end": NonNegative,
    "target_layers": list[LayerIndex] | None,
    "layer_multipliers": dict[LayerIndex, NonNegative] | None,
    "zone_overrides": list[ZoneOverrideInput],
})
_INPUT_SCHEMAS: dict[type, TypeAdapter] = {NoiseConfig: _NOISE_INPUT}


def section_to_dict(section: Any) -> Any:
    """Plain YAML/JSON data of a section (enums by value, tuples as lists)."""
    if hasattr(section, "to_dict"):
        return section.to_dict()
    if dataclasses.is_dataclass(section):
        return {f.name: section_to_dict(getattr(section, f.name)) for f in fields(section)}
    if isinstance(section, enum.Enum):
        return section.value
    if isinstance(section, dict):
        return {k: section_to_dict(v) for k, v in section.items()}
    if isinstance(section, (list, tuple)):
        return [section_to_dict(v) for v in section]
    return section


# --- our sections ----------------------------------------------------------------------------------

@pydantic_dataclass(frozen=True, config=STRICT)
class TaskConfig:
    """What the policy learns: the built-in word problems, or GSM8K files the user supplies."""

    name: str = "arithmetic"
    train_file: str | None = None
    """gsm8k: verl parquet (prompt chat list + reward_model.ground_truth) or JSONL (question, answer '#### n')."""
    test_file: str | None = None
    train_size: Annotated[int, Field(ge=1, le=MAX_PROBLEMS)] | None = 512
    """Problems used for training (null: every problem of a gsm8k file)."""
    test_size: Annotated[int, Field(ge=1, le=MAX_PROBLEMS)] | None = 64
    format_score: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """Training reward for a well-formed but wrong '#### n' answer (verl's gsm8k `format_score`);
    a correct answer earns 1.0. 0.0: strict correctness only. Validation accuracy never uses it."""
    difficulty: str = "multi_step"
    """arithmetic only: `multi_step` (two or three operations, GSM8K-like) or `one_step` (one +, - or x
    on small numbers: what a ~100M-parameter model can solve at all; srdd.mathdata)."""
    instruction: str = INSTRUCTION
    """arithmetic only: the text after every question. It must ask for '####', which the strict
    reward and accuracy grade. Default: verl's GSM8K instruction (a gsm8k file always uses it)."""

    def __post_init__(self) -> None:
        if self.name not in TASKS:
            raise SrddError(f"task.name must be one of {list(TASKS)}, got {self.name!r}")
        if self.name == "gsm8k":
            if not (self.train_file and self.test_file):
                raise SrddError("task gsm8k needs task.train_file and task.test_file (verl parquet or JSONL)")
            for key in ("train_file", "test_file"):
                path = Path(getattr(self, key))
                if not path.is_file():
                    raise SrddError(f"task.{key} {path} does not exist")
            if self.difficulty != "multi_step" or self.instruction != INSTRUCTION:
                raise SrddError("task.difficulty and task.instruction are for the built-in arithmetic task; "
                                "a gsm8k file brings its own problems and verl's instruction")
        elif self.train_file or self.test_file:
            raise SrddError("task.train_file/test_file are for task.name gsm8k; the arithmetic task is built in")
        if self.difficulty not in DIFFICULTIES:
            raise SrddError(f"task.difficulty must be one of {list(DIFFICULTIES)}, got {self.difficulty!r}")
        if "####" not in self.instruction:
            raise SrddError(f"task.instruction must ask for the answer after '####' (what the strict reward "
                            f"grades), got {self.instruction!r}")
        for key in ("train_size", "test_size"):
            if getattr(self, key) is None and self.name == "arithmetic":
                raise SrddError(f"task.{key} must be a number for the built-in arithmetic task")


@pydantic_dataclass(frozen=True, config=STRICT)
class LoraConfig:
    r: Annotated[int, Field(ge=0, le=4096)] = 32
    """LoRA rank; 0: no adapters, every weight trained under the STE (full fine-tuning, the verl engine only)."""
    alpha: Annotated[int, Field(ge=1, le=65536)] = 64
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))

    def __post_init__(self) -> None:
        if not self.target_modules:
            raise SrddError("lora.target_modules must name at least one module")


@pydantic_dataclass(frozen=True, config=STRICT)
class GrpoConfig:
    steps: Steps = 58
    """Optimizer steps; the final one is always validated."""
    num_generations: Annotated[int, Field(ge=2, le=MAX_BATCH)] = 8
    """Completions per prompt (one GRPO group)."""
    batch_size: BatchSize = 8
    """Completions per step (batch_size / num_generations prompts)."""
    micro_batch_size: BatchSize | None = None
    """Completions per forward/backward pass (null: batch_size, all at once). A step still generates and
    rewards batch_size completions and makes one optimizer update, from batch_size / micro_batch_size
    accumulated passes (TRL's gradient accumulation): peak memory for activations and logits falls by that
    factor. TRL's default loss (dapo) is normalized by the whole step's completion tokens, so the update is the
    same sum up to float rounding (a 6-step learn run: the same rewards at every step, losses equal to 1e-7)."""
    shared_prompt: bool = False
    """The update's forward runs each distinct prompt of a pass once and scores only completion tokens (trl
    engine, rin_train.trl.shared_prompt): about half the update's FLOPs on the demo, but equal to TRL's
    forward only up to float rounding, so a run's numbers differ in their last bits from one without it."""
    max_prompt_length: Tokens = 256
    """Prompts longer than this (in tokens) are dropped from the task, with a count printed."""
    max_completion_length: Tokens = 256
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 1.0e-5
    temperature: Annotated[float, Field(gt=0, le=100)] = 1.0
    beta: Annotated[float, Field(ge=0, le=1000)] = 0.0
    """KL coefficient (0: no reference model)."""
    save_every: Steps = 10
    """Checkpoint every N steps (what --resume continues from)."""
    stall_timeout_s: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] = 1800.0
    """Watchdog: a step (or validation) running longer than this ends the run as failed."""
    stop_after_zero_variance_steps: Steps | None = None
    """Lesson 9: after this many consecutive steps in which every reward group had zero variance
    (no learning signal) the run stops as failed, with that reason. null: log and continue."""
    dtype: str = "float32"
    """Precision of the policy's base weights. float32 keeps noise far below bf16's resolution
    (lesson 2); bfloat16 runs bf16 matmuls (about 3x faster on CPUs with AVX512-BF16) and rounds the
    perturbed weights, which the per-layer achieved sigma in metrics.jsonl then shows."""
    matmul_dtype: str = "auto"
    """Precision of the quantized linears' GEMMs: auto | float32 | bfloat16. auto resolves to bfloat16
    exactly when the trl policy is W4A4 in a format whose values bf16 holds exactly (srdd.qlinear.bf16_exact:
    mxfp4, mxfp6) on fp32 weights (grpo.dtype float32): both GEMM inputs are then exact, so only the GEMM's
    output rounding differs from fp32, at a fraction of the cost. The fp32 master weights, RMSNorm weights,
    residual stream, noise and lm_head stay fp32 (lesson 2 holds: noise is applied in fp32 and reaches the
    quantized values before any bf16 cast). Otherwise auto resolves to grpo.dtype (always float32 for verl,
    which runs its own FSDP mixed precision). run.json records the resolved value."""

    def __post_init__(self) -> None:
        if self.dtype not in POLICY_DTYPES:
            raise SrddError(f"grpo.dtype must be one of {list(POLICY_DTYPES)}, got {self.dtype!r}")
        if self.matmul_dtype not in ("auto", *MATMUL_DTYPES):
            raise SrddError(f"grpo.matmul_dtype must be one of {['auto', *MATMUL_DTYPES]}, got {self.matmul_dtype!r}")
        if self.matmul_dtype == "float32" and self.dtype == "bfloat16":
            raise SrddError("grpo.matmul_dtype=float32 needs grpo.dtype=float32: a bf16 policy's weights and "
                            "activations are already rounded to bf16, so fp32 matmuls would only cost time")
        if self.batch_size < self.num_generations or self.batch_size % self.num_generations:
            raise SrddError(f"grpo.batch_size {self.batch_size} must be a multiple of num_generations "
                            f"{self.num_generations} (GRPO compares completions within a group of them)")
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            raise SrddError(f"grpo.micro_batch_size {self.micro_batch_size} must divide batch_size {self.batch_size} "
                            "(a step's completions are split into equal passes)")

    @property
    def accumulation_steps(self) -> int:
        """Forward/backward passes per optimizer step."""
        return self.batch_size // (self.micro_batch_size or self.batch_size)


@pydantic_dataclass(frozen=True, config=STRICT)
class EvalConfig:
    every: Steps = 10
    """Validate at step 0, every N steps, and always at the final step."""
    samples: Annotated[int, Field(ge=1, le=MAX_PROBLEMS)] = 64
    final_samples: Annotated[int, Field(ge=1, le=MAX_PROBLEMS)] | None = None
    """Problems in the final step's validations (None: `samples`). A study's endpoint can be measured on a
    large test set while the intermediate validations, which only track learning, stay cheap; the first
    `samples` of these problems are the intermediate validations' problems."""
    endpoint_only: bool = False
    """Give `final_samples` only to the final step's merged validation (the deployed policy, a study's
    endpoint); the final step's separate-LoRA validation then runs on the intermediate problems like every
    earlier one, so the learning curve stays on one test set and the large set is generated once, not twice."""
    max_new_tokens: Tokens = 256
    batch_size: BatchSize = 16
    shared_prefix: bool = False
    """Prefill each validation batch's common prompt prefix (the chat template's) once (trl engine): about a
    quarter fewer validation FLOPs on the demo, but equal to the plain prefill only up to float rounding, so
    validations may differ from a run without it (rin_train.shared_prefill)."""

    @property
    def final_problems(self) -> int:
        return self.samples if self.final_samples is None else self.final_samples


@pydantic_dataclass(frozen=True, config=STRICT)
class ScanConfig:
    """The rescans of the policy before and after training (srdd.scan/v1, the training format)."""

    before: bool = True
    after: bool = True
    samples: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 8
    max_tokens: Annotated[int, Field(ge=2, le=MAX_TOKENS)] = 128


@pydantic_dataclass(frozen=True, config=STRICT)
class QuantConfig:
    """The policy's fake quantization (srdd.qlinear): format, W4A4/W4A16/A4 mode, format options,
    regexes of linears left unquantized (lm_head and embed_tokens by default, DESIGN.md lesson 7)."""

    format: str = "mxfp4"
    mode: str = "w4a4"
    options: dict = field(default_factory=dict)
    exclude: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDE))

    def __post_init__(self) -> None:
        self.linear_config()  # validates format, options, mode and the exclude regexes

    def linear_config(self, matmul_dtype: str | None = None) -> LinearQuantConfig:
        """The srdd.qlinear config; `matmul_dtype` (the policy's resolved grpo.matmul_dtype) only for the
        policy's own linears (None: GEMMs in the weights' dtype, as the rescans measure them)."""
        return LinearQuantConfig(self.format, self.mode, dict(self.options), tuple(self.exclude), matmul_dtype)


SECTIONS: dict[str, type] = {"task": TaskConfig, "quant": QuantConfig, "lora": LoraConfig, "grpo": GrpoConfig,
                             "eval": EvalConfig, "noise": NoiseConfig, "scan": ScanConfig}
SECTION_ORDER = ("task", "quant", "lora", "grpo", "eval", "noise", "scan")
SCALARS = ("name", "seed", "model", "engine")
TOP_LEVEL = (*SCALARS, *SECTION_ORDER)


class TopLevel(BaseModel):
    """The scalars beside the sections: what a run is called, its seed, model and engine."""

    model_config = ConfigDict(**STRICT, extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=255)]
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    model: Annotated[str, Field(min_length=1)] = "smollm2"
    """smollm2 | tiny | HF dir | hub id | .gguf file"""
    engine: Literal[ENGINES] = "trl"


_TOP_LEVEL = TypeAdapter(TopLevel)


@dataclass(frozen=True)
class RunConfig:
    name: str
    seed: int
    model: str
    engine: str
    task: TaskConfig
    quant: QuantConfig
    lora: LoraConfig
    grpo: GrpoConfig
    eval: EvalConfig
    noise: NoiseConfig
    scan: ScanConfig

    @property
    def quant_label(self) -> str:
        """How every accuracy of this run records its precision, e.g. 'mxfp4/w4a4'."""
        return self.quant.linear_config().label

    def to_dict(self) -> dict:
        """The resolved config as plain data (what run.json stores; load_run_config reads it back)."""
        out = {k: getattr(self, k) for k in SCALARS}
        out.update({k: section_to_dict(getattr(self, k)) for k in SECTION_ORDER})
        return out


# --- loading ---------------------------------------------------------------------------------------

def parse_set(assignment: str) -> tuple[list[str], Any]:
    """'grpo.steps=10' -> (['grpo', 'steps'], 10); values are YAML ('[rmsnorm]', '{0: 2.0}', 'null')."""
    if "=" not in assignment:
        raise SrddError(f"--set expects KEY=VALUE, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise SrddError(f"--set: bad key {key!r}")
    shown = raw if len(raw) <= 60 else f"{raw[:60]}... ({len(raw)} characters)"
    return parts, load_yaml(raw, f"--set {key}: value {shown!r}")


def apply_set(data: dict, assignment: str) -> None:
    parts, value = parse_set(assignment)
    if len(parts) > 1 and parts[0] in SCALARS:
        raise SrddError(f"--set {'.'.join(parts)}: {parts[0]} is not a section")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SrddError(f"--set {'.'.join(parts)}: {'.'.join(parts[:depth + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def merge(base: dict, over: dict) -> dict:
    """Deep merge of config mappings; mappings that are values (layer_multipliers, options) are replaced whole."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("layer_multipliers", "options"):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SrddError(f"config {path} does not exist")
    try:
        loaded = load_yaml(path.read_text(encoding="utf-8"), f"config {path}")
    except UnicodeDecodeError:
        raise SrddError(f"config {path} is not UTF-8 text") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise SrddError(f"config {path}: expected a mapping at the top level, got {type(loaded).__name__}")
    noise = loaded.get("noise")
    if isinstance(noise, dict) and isinstance(noise.get("multipliers_file"), str):
        # a file a config names is relative to the config (so a suite can be moved or committed), not to the cwd
        noise["multipliers_file"] = str(path.parent / Path(noise["multipliers_file"]).expanduser())
    return loaded


def load_run_config(source: str | Path | dict | None = None, overrides: list[str] | tuple[str, ...] = (), *,
                    preset: dict | None = None, name: str | None = None, sets: list[str] | None = None) -> RunConfig:
    """Resolve a run config: defaults < `preset` < `source` (YAML path or mapping) < `overrides` (KEY=VALUE).

    `name` (e.g. from --name or the --out directory) wins over the file's `name`; without either the
    file stem is used. Every error is a SrddError naming the key.
    """
    data: dict[str, Any] = copy.deepcopy(preset or {})
    stem = None
    if isinstance(source, (str, Path)):
        data = merge(data, read_config_file(source))
        stem = Path(source).stem
    elif isinstance(source, dict):
        data = merge(data, copy.deepcopy(source))
    elif source is not None:
        raise SrddError(f"config: expected a path or a mapping, got {type(source).__name__}")
    for assignment in [*overrides, *(sets or [])]:
        apply_set(data, assignment)
    return resolve(data, name=name, stem=stem)


def resolve(data: dict, *, name: str | None = None, stem: str | None = None) -> RunConfig:
    unknown = sorted(set(map(str, data)) - set(TOP_LEVEL))
    if unknown:
        raise SrddError(f"config: unknown key(s) {unknown}; valid keys: {', '.join(TOP_LEVEL)}")
    scalars = {k: data[k] for k in SCALARS if k in data}
    scalars.setdefault("name", stem or "run")
    try:
        top = _TOP_LEVEL.validate_python(scalars)  # the file's name is checked even when `name` wins
    except ValidationError as exc:
        raise SrddError(_error_text(exc, "")) from None
    sections = {k: section_from_dict(SECTIONS[k], data.get(k), k) for k in SECTION_ORDER}
    cfg = RunConfig(name=name or top.name, seed=top.seed, model=top.model, engine=top.engine, **sections)
    check_cross_sections(cfg)
    return dataclasses.replace(cfg, grpo=dataclasses.replace(cfg.grpo, matmul_dtype=resolve_matmul_dtype(cfg)))


def resolve_matmul_dtype(cfg: RunConfig) -> str:
    """grpo.matmul_dtype with `auto` made concrete (see GrpoConfig.matmul_dtype)."""
    g = cfg.grpo
    if g.matmul_dtype != "auto":
        return g.matmul_dtype
    quant = cfg.quant.linear_config()
    exact = (cfg.engine == "trl" and g.dtype == "float32" and quant.mode is QuantMode.W4A4
             and bf16_exact(quant.format, quant.options))
    return "bfloat16" if exact else g.dtype


def check_cross_sections(cfg: RunConfig) -> None:
    """Rules that span sections: each one is something a run would otherwise discover too late."""
    g, e, t, n = cfg.grpo, cfg.eval, cfg.task, cfg.noise
    if t.test_size is not None and e.samples > t.test_size:
        raise SrddError(f"eval.samples {e.samples} > task.test_size {t.test_size}: validation would silently "
                        "use fewer problems; lower eval.samples or raise task.test_size")
    if e.final_samples is not None:
        if e.final_samples < e.samples:
            raise SrddError(f"eval.final_samples {e.final_samples} < eval.samples {e.samples}: the final validation "
                            "covers the intermediate validations' problems and more")
        if t.test_size is not None and e.final_samples > t.test_size:
            raise SrddError(f"eval.final_samples {e.final_samples} > task.test_size {t.test_size}: raise "
                            "task.test_size")
        if cfg.engine == "verl":
            raise SrddError("eval.final_samples: the verl engine validates one fixed set every time; leave it unset")
    elif e.endpoint_only:
        raise SrddError("eval.endpoint_only: set eval.final_samples too; without it every validation has the same "
                        "problems and there is nothing to give the endpoint alone")
    prompts_per_step = g.batch_size // g.num_generations
    if t.train_size is not None and t.train_size < prompts_per_step:
        raise SrddError(f"task.train_size {t.train_size} < {prompts_per_step} prompts per step")
    if n.enabled and n.num_stages > g.steps:
        raise SrddError(f"noise.num_stages {n.num_stages} > grpo.steps {g.steps}: some stages would never run; "
                        "num_stages must mean what it says")
    if cfg.lora.r == 0 and cfg.engine != "verl":
        raise SrddError("lora.r=0 (full fine-tuning, no adapters) needs engine verl: the trl engine trains LoRA "
                        "adapters and evaluates them merged into the weights")


def check_against_model(cfg: RunConfig, num_layers: int) -> None:
    """Layer indices in the noise settings must exist in the model (checked before any training)."""
    n = cfg.noise
    if not n.enabled:
        return
    referenced = set(n.target_layers or [])
    referenced |= set(n.layer_multipliers or {})
    for zone in n.zone_overrides:
        referenced |= set(zone.layers)
    missing = sorted(layer for layer in referenced if not 0 <= layer < num_layers)
    if missing:
        raise SrddError(f"noise settings name layers {missing}, but model {cfg.model!r} has {num_layers} decoder "
                        f"layers (0..{num_layers - 1}); multipliers/zones must come from a scan of this model")


def config_for_resume(recorded: dict) -> RunConfig:
    """The config a run.json recorded, resolved again for --resume.

    The recorded config holds the multipliers actually used; when it also names the
    multipliers file they came from, the recorded values win (the file may have moved).
    A run recorded before grpo.matmul_dtype existed ran its GEMMs in grpo.dtype and
    continues so, rather than switching precision mid-run through `auto`.
    """
    data = copy.deepcopy(recorded)
    grpo = data.get("grpo")
    if isinstance(grpo, dict) and "matmul_dtype" not in grpo:
        grpo["matmul_dtype"] = grpo.get("dtype", "float32")  # recorded before the key existed: it ran there
    noise = data.get("noise") or {}
    if noise.get("layer_multipliers") is not None and noise.get("multipliers_file") is not None:
        noise["multipliers_file"] = None
    return resolve(data)
