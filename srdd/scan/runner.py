"""One pass over the calibration batches, every site and format at once, plus the model-level damage."""

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
from srdd.scan.accumulate import SITES, ScanStats
from srdd.scan.capture import FormatSpec, SiteCapture, measure_weights
from srdd.scan.fidelity import NextTokens, OutputStats, output_stats
from srdd.scan.propagated import PropagatedCapture
from srdd.scan.report import build_report
from srdd.scan.rows import ValidRows
from srdd.scan.switch import LayerSwitch


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
    sensitivity: bool = False
    """Also one forward per decoder layer with only that layer quantized: its output KL (srdd scan --sensitivity)."""

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
    """Per forward pass normally; per decoder layer when the model is offloaded (a batch of a 7B takes minutes)."""

    def __init__(self, model: nn.Module, forwards: int, weight_pass: bool, enabled: bool) -> None:
        self.offload = getattr(model, "srdd_offload", None)
        if self.offload is None:
            self.bar = tqdm(total=forwards, desc="scanning", unit="pass", disable=not enabled)
            return
        layers = len(self.offload.layers)
        self.bar = tqdm(total=(forwards + weight_pass) * layers, desc="scanning (offloaded)", unit="layer",
                        disable=not enabled)
        self.offload.on_release = lambda index: self.bar.update(1)

    def forward_done(self) -> None:
        if self.offload is None:
            self.bar.update(1)

    def close(self) -> None:
        if self.offload is not None:
            self.offload.on_release = None
        self.bar.close()


def _logits(model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, bar: Progress) -> torch.Tensor:
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False)
    bar.forward_done()
    return out.logits


@dataclass
class Damage:
    """Per format: the whole quantized model's OutputStats and, with --sensitivity, one per decoder layer."""

    label: dict[str, str] = field(default_factory=dict)
    model: dict[str, OutputStats] = field(default_factory=dict)
    layers: dict[str, list[OutputStats]] = field(default_factory=dict)


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
    per_batch = 2 + (len(layers) if cfg.sensitivity else 0)
    bar = Progress(model, len(steps) * len(specs) * per_batch, "weight" in cfg.sites, progress)
    damage = Damage()
    was_training = model.training
    model.eval()
    try:
        if "weight" in cfg.sites:
            measure_weights(layers, stats, specs, bar.offload)
        _run(model, steps, cfg, stats, specs, damage, bar)
    finally:
        bar.close()
        model.train(was_training)
    calibration = {"source": source, "samples": len(ids), "tokens": sum(len(s) for s in ids),
                   "seed": cfg.seed, "max_tokens": cfg.max_tokens}
    return [build_report(stats, key, cfg, model_info, calibration,
                         fidelity=damage.model[key], fidelity_label=damage.label[key],
                         sensitivity=damage.layers.get(key))
            for key, _, _ in specs]


def _run(model: nn.Module, steps, cfg: ScanConfig, stats: ScanStats, specs: list[FormatSpec], damage: Damage,
         bar: Progress) -> None:
    """Per format, the model's own decoder-layer linears are made W4A4 in place (no second copy of the model,
    which an offloaded model could not have), and each batch runs with quantization off (the reference), then
    on, then (--sensitivity) once per layer with only that layer on. The isolated sites are measured in the
    first format's reference forwards (every format at once); the propagated ones compare the reference and
    quantized forwards; the fidelity compares the logits of those same two forwards."""
    layers = decoder_layers(model)
    sites = SiteCapture(layers, stats, specs, set(cfg.sites)) if cfg.mode is ScanMode.ISOLATED else None
    try:
        for k, (key, fmt, options) in enumerate(specs):
            with LayerSwitch(layers, fmt, options) as switch:
                damage.label[key] = switch.label
                damage.model[key] = OutputStats()
                if cfg.sensitivity:
                    damage.layers[key] = [OutputStats() for _ in layers]
                drift = PropagatedCapture(layers, stats, key) if cfg.mode is ScanMode.PROPAGATED else None
                try:
                    for input_ids, mask in steps:
                        _batch(model, input_ids, mask, switch, key, damage, bar,
                               sites if k == 0 else None, drift)
                finally:
                    if drift is not None:
                        drift.remove()
    finally:
        if sites is not None:
            sites.remove()


def _batch(model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, switch: LayerSwitch, key: str,
           damage: Damage, bar: Progress, sites: SiteCapture | None, drift: PropagatedCapture | None) -> None:
    rows, scored = ValidRows.from_mask(mask), NextTokens.from_batch(input_ids, mask)
    for capture in (sites, drift):
        if capture is not None:
            capture.rows, capture.active = rows, True
    if drift is not None:
        drift.reference = True
    switch.quantize_only(())
    reference = scored.rows(_logits(model, input_ids, mask, bar))
    if sites is not None:
        sites.active = False
    if drift is not None:
        drift.reference = False
    switch.quantize_all()
    quantized = scored.rows(_logits(model, input_ids, mask, bar))
    damage.model[key] = damage.model[key] + output_stats(reference, quantized, scored.targets)
    if drift is not None:
        drift.active = False
    for index, per_layer in enumerate(damage.layers.get(key, [])):
        switch.quantize_only((index,))
        alone = scored.rows(_logits(model, input_ids, mask, bar))
        damage.layers[key][index] = per_layer + output_stats(reference, alone, scored.targets)
