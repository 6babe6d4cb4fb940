"""The srdd.scan/v1 file as readers rely on it, validated before any of it is used.

`srdd show` renders, exports and plots a scan; `srdd ingest` stores scans in a
run directory that `srdd correlate` reads back. Both read files a user hands
them, so every field they touch is checked here first (types, finite numbers,
ratios in 0..1, layer ids 0..L-1 matching model.num_layers, a bounded number of
layers) and a bad file is one SrddError naming the field, never a traceback
halfway through a table. Two levels:

- `check_scan_layers`: schema, model, format and the per-layer block_output
  metrics (what a run directory's scan_before/scan_after must hold).
- `check_scan_report`: a whole scan as `srdd scan` writes it (summary, zones,
  worst layers, calibration): what `srdd show` renders.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from srdd.errors import SrddError

MAX_LAYERS = 4096
"""Far above any decoder depth; a bigger count is a corrupt file, refused before anything is allocated."""

_CONFIG = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)
Finite = float
NonNegative = Annotated[float, Field(ge=0)]
Ratio = Annotated[float, Field(ge=0, le=1)]
LayerId = Annotated[int, Field(ge=0, lt=MAX_LAYERS)]
Count = Annotated[int, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    model_config = _CONFIG


class SiteMetrics(_Strict):
    relative_error: NonNegative
    deadzone_ratio: Ratio
    sqnr_db: Finite


class PrimaryMetrics(SiteMetrics):
    saturation_ratio: Ratio
    mse: NonNegative


class OutputDamage(_Strict):
    """Next-token damage (srdd.scan.fidelity); the statistics are absent when no token was scored."""

    tokens: Count
    kl_mean: NonNegative | None = None
    kl_p99: NonNegative | None = None
    kl_max: NonNegative | None = None
    top1_agreement: Ratio | None = None
    perplexity_fp: Positive | None = None
    perplexity_q: Positive | None = None
    perplexity_ratio: Positive | None = None

    @model_validator(mode="after")
    def _complete(self) -> OutputDamage:
        needed = ("kl_mean", "kl_p99", "kl_max", "top1_agreement")
        missing = [k for k in needed if getattr(self, k) is None]
        if self.tokens and missing:
            raise ValueError(f"{self.tokens} tokens were scored but {missing} are missing")
        return self


class Fidelity(OutputDamage):
    quantized: str


class Layer(_Strict):
    layer: LayerId
    block_output: SiteMetrics | None = None
    primary: PrimaryMetrics | None = None
    linear_inputs: dict[str, SiteMetrics] = Field(default_factory=dict)
    sensitivity: OutputDamage | None = None


class Correlation(_Strict):
    rho: Annotated[float, Field(ge=-1, le=1)] | None
    n: Count


class Sensitivity(_Strict):
    metric: Literal["kl_mean"]
    quantized: str
    rank_correlation: dict[str, Correlation] | None = None


class ModelInfo(_Strict):
    name: str
    num_layers: Annotated[int, Field(ge=1, le=MAX_LAYERS)] | None = None


class FormatInfo(_Strict):
    name: str


class ScanLayers(_Strict):
    schema_: Literal["srdd.scan/v1"] = Field(alias="schema")
    model: ModelInfo
    format: FormatInfo
    layers: Annotated[list[Layer], Field(min_length=1, max_length=MAX_LAYERS)]

    @model_validator(mode="after")
    def _ids(self) -> ScanLayers:
        ids = [entry.layer for entry in self.layers]
        if ids != list(range(len(ids))):
            raise ValueError(f"layer ids must be 0..{len(ids) - 1} in order, got {ids[:8]}{'...' if len(ids) > 8 else ''}")
        if self.model.num_layers is not None and self.model.num_layers != len(ids):
            raise ValueError(f"model.num_layers is {self.model.num_layers} but the file has {len(ids)} layers")
        return self


class Spread(_Strict):
    min: Finite
    max: Finite
    mean: Finite
    std: NonNegative


class Zone(_Strict):
    name: str
    kind: Literal["depth", "data"]
    layers: Annotated[list[LayerId], Field(min_length=1)]
    relative_error: NonNegative
    deadzone_ratio: Ratio
    sqnr_db: Finite


class Worst(PrimaryMetrics):
    layer: LayerId


class Calibration(_Strict):
    samples: Annotated[int, Field(ge=0)]
    tokens: Annotated[int, Field(ge=0)]


class ScanReport(ScanLayers):
    model: ModelInfo
    mode: Literal["isolated", "propagated"]
    primary_site: Literal["block_output", "linear_input"]
    rank_metric: str
    calibration: Calibration
    summary: dict[Literal["sqnr_db", "relative_error", "deadzone_ratio", "saturation_ratio", "mse"], Spread]
    zones: list[Zone]
    worst_layers: list[Worst]
    warnings: list[str] = Field(default_factory=list)
    fidelity: Fidelity | None = None
    """Absent in scans written before srdd measured model-level damage."""
    sensitivity: Sensitivity | None = None

    @model_validator(mode="after")
    def _complete(self) -> ScanReport:
        missing = [k for k in ("sqnr_db", "relative_error", "deadzone_ratio", "saturation_ratio") if k not in self.summary]
        if missing:
            raise ValueError(f"summary lacks {missing}")
        if any(entry.primary is None for entry in self.layers):
            raise ValueError("every layer needs its 'primary' metrics")
        if self.sensitivity is not None:
            lacking = [e.layer for e in self.layers if e.sensitivity is None or e.sensitivity.kl_mean is None]
            if lacking:
                raise ValueError(f"sensitivity: layers {lacking[:8]} have no sensitivity.kl_mean")
        return self


def _message(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]).lstrip(".")
    got: Any = err.get("input")
    shown = "" if isinstance(got, (dict, list)) else f", got {got!r}"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{loc + ': ' if loc else ''}{err['msg'].removeprefix('Value error, ')}{shown}{more}"


def _check(model: type[BaseModel], doc: Any, what: str) -> None:
    if not isinstance(doc, dict):
        raise SrddError(f"{what}: expected a JSON object, got {type(doc).__name__}")
    if doc.get("schema") != "srdd.scan/v1":
        raise SrddError(f"{what} is not a srdd.scan/v1 file (schema: {doc.get('schema')!r})")
    try:
        model.model_validate(doc)
    except ValidationError as exc:
        raise SrddError(f"{what}: {_message(exc)}") from None


def check_scan_layers(doc: Any, what: str) -> None:
    """A scan's per-layer block_output metrics, for a run directory (SrddError naming the field)."""
    _check(ScanLayers, doc, what)
    if any(layer.get("block_output") is None for layer in doc["layers"]):
        raise SrddError(f"{what}: every layer needs block_output metrics (the site runs are compared on)")


def check_scan_report(doc: Any, what: str) -> None:
    """A whole scan as `srdd scan` writes it, for rendering (SrddError naming the field)."""
    _check(ScanReport, doc, what)
