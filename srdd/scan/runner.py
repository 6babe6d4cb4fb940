"""One pass over the calibration batches, every site and format at once."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from srdd.calibration_prompts import load_samples, tokenize
from srdd.errors import SrddError
from srdd.formats import get_format, list_formats
from srdd.models import decoder_layers
from srdd.qlinear import LinearQuantConfig, QuantMode, linears_quantized, quantization_disabled
from srdd.scan.accumulate import SITES, ScanStats
from srdd.scan.capture import FormatSpec, SiteCapture, measure_weights
from srdd.scan.propagated import PropagatedCapture
from srdd.scan.report import build_report
from srdd.scan.rows import ValidRows


LIMITS = {"samples": 65_536, "max_tokens": 131_072, "batch_size": 4096}
"""Upper bounds checked before anything is read or allocated."""
OPTION_FLAGS = {"scale_mode": "--scale-mode", "per_tensor_scale": "--no-per-tensor-scale", "group_size": "--group-size"}


class ScanMode(str, enum.Enum):
    ISOLATED = "isolated"
    """Each full-precision tensor is quantized on the side; errors do not propagate."""
    PROPAGATED = "propagated"
    """The model runs W4A4; each layer's output is compared with the full-precision model's."""


@dataclass(frozen=True)
class ScanConfig:
    formats: tuple[str, ...] = ("mxfp4",)
    format_options: dict = field(default_factory=dict)
    sites: tuple[str, ...] = ("block_output", "linear_input")
    mode: ScanMode = ScanMode.ISOLATED
    samples: int = 8
    max_tokens: int = 256
    batch_size: int = 8
    seed: int = 0
    data: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", ScanMode(self.mode))
        if not self.formats:
            raise SrddError("give at least one format")
        for fmt in self.formats:
            if fmt not in list_formats():
                raise SrddError(f"unknown format {fmt!r}; known formats: {', '.join(list_formats())}")
            try:
                get_format(fmt, **self.options_for(fmt))
            except (ValueError, TypeError) as exc:
                raise SrddError(str(exc)) from None
        bad = sorted(set(self.sites) - set(SITES))
        if bad or not self.sites:
            raise SrddError(f"unknown site(s) {bad}; choose from {', '.join(SITES)}")
        for name in ("samples", "max_tokens", "batch_size"):
            if not 1 <= getattr(self, name) <= LIMITS[name]:
                raise SrddError(f"--{name.replace('_', '-')} must be in 1..{LIMITS[name]}, got {getattr(self, name)}")
        if len(set(self.formats)) != len(self.formats):
            raise SrddError(f"--fmt names a format twice: {','.join(self.formats)}")
        self._check_options_apply()

    def _check_options_apply(self) -> None:
        """An option no requested format takes is an error, not silently dropped (--group-size with mxfp4)."""
        from srdd.formats import FORMATS

        for key in self.format_options:
            if not any(key in FORMATS[fmt].options for fmt in self.formats):
                takers = sorted(f for f in FORMATS if key in FORMATS[f].options)
                raise SrddError(f"{OPTION_FLAGS.get(key, key)} does not apply to {','.join(self.formats)}; "
                                f"it is an option of {', '.join(takers)}")

    def options_for(self, fmt: str) -> dict:
        """Format options apply to the formats that accept them (e.g. scale_mode to MX formats)."""
        from srdd.formats import FORMATS

        accepted = FORMATS[fmt].options
        return {k: v for k, v in self.format_options.items() if k in accepted}

    def format_specs(self) -> list[FormatSpec]:
        return [(fmt, fmt, self.options_for(fmt)) for fmt in self.formats]


def batches(ids: list[list[int]], batch_size: int, pad_id: int):
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        width = max(len(s) for s in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, s in enumerate(chunk):
            input_ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        yield input_ids, mask


class Progress:
    """Per batch normally; per decoder layer when the model is offloaded (a batch of a 7B takes minutes)."""

    def __init__(self, model: nn.Module, batches: int, passes: int, weight_pass: bool, enabled: bool) -> None:
        self.offload = getattr(model, "srdd_offload", None)
        if self.offload is None:
            self.bar = tqdm(total=batches * passes, desc="scanning", unit="batch", disable=not enabled)
            return
        layers = len(self.offload.layers)
        self.bar = tqdm(total=(batches * passes + weight_pass) * layers, desc="scanning (offloaded)", unit="layer",
                        disable=not enabled)
        self.offload.on_release = lambda index: self.bar.update(1)

    def batch_done(self) -> None:
        if self.offload is None:
            self.bar.update(1)

    def close(self) -> None:
        if self.offload is not None:
            self.offload.on_release = None
        self.bar.close()


def _forward(model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor) -> None:
    device = next(model.parameters()).device
    with torch.no_grad():
        model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False)


def scan_model(model: nn.Module, tokenizer, cfg: ScanConfig | None = None, *, model_info: dict,
               progress: bool = True, texts: list[str] | None = None) -> list[dict]:
    """Scan an in-memory or offloaded model (PEFT-wrapped is fine); one srdd.scan/v1 document per format.

    rin_train calls this for its before/after rescans of the policy.
    """
    cfg = cfg or ScanConfig()
    if texts is not None:
        ids = [tokenizer(t)["input_ids"][: cfg.max_tokens] for t in texts]
        source = "texts"
    else:
        ids = tokenize(load_samples(cfg.data, cfg.samples, cfg.seed), tokenizer, cfg.max_tokens)
        source = cfg.data or "builtin:mathdata"
    layers = decoder_layers(model)
    stats = ScanStats(len(layers), list(cfg.formats))
    specs = cfg.format_specs()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    steps = list(batches(ids, cfg.batch_size, pad_id))
    passes = 2 * len(specs) if cfg.mode is ScanMode.PROPAGATED else 1
    bar = Progress(model, len(steps), passes, "weight" in cfg.sites, progress)
    was_training = model.training
    model.eval()
    try:
        if "weight" in cfg.sites:
            measure_weights(layers, stats, specs, bar.offload)
        if cfg.mode is ScanMode.ISOLATED:
            _run_isolated(model, steps, cfg, stats, specs, bar)
        else:
            _run_propagated(model, steps, stats, specs, bar)
    finally:
        bar.close()
        model.train(was_training)
    calibration = {"source": source, "samples": len(ids), "tokens": sum(len(s) for s in ids),
                   "seed": cfg.seed, "max_tokens": cfg.max_tokens}
    return [build_report(stats, key, cfg, model_info, calibration) for key, _, _ in specs]


def _run_isolated(model: nn.Module, steps, cfg: ScanConfig, stats: ScanStats, specs: list[FormatSpec],
                  bar: Progress) -> None:
    capture = SiteCapture(decoder_layers(model), stats, specs, set(cfg.sites))
    try:
        for input_ids, mask in steps:
            capture.rows = ValidRows.from_mask(mask)
            _forward(model, input_ids, mask)
            bar.batch_done()
    finally:
        capture.remove()


def _run_propagated(model: nn.Module, steps, stats: ScanStats, specs: list[FormatSpec], bar: Progress) -> None:
    """Per format, the model's own linears are made W4A4 in place (no second copy of the model, which an
    offloaded model could not have); each batch runs once with quantization off (the reference) and once on."""
    layers = decoder_layers(model)
    for key, fmt, options in specs:
        with linears_quantized(layers, LinearQuantConfig(fmt, QuantMode.W4A4, options, ())):
            capture = PropagatedCapture(layers, stats, key)
            try:
                for input_ids, mask in steps:
                    capture.rows = ValidRows.from_mask(mask)
                    capture.reference = True
                    with quantization_disabled(model):
                        _forward(model, input_ids, mask)
                    capture.reference = False
                    _forward(model, input_ids, mask)
                    bar.batch_done()
                    bar.batch_done()
            finally:
                capture.remove()
