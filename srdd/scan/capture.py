"""Forward hooks that feed every site's activations to the fused statistics kernel.

Hooks only read tensors (no weight swapping). Inputs shared by several
linears (q/k/v read one normed tensor, gate/up another) are measured once per
layer and the result reused, keyed by tensor identity; the cache is cleared at
every decoder layer so no activation outlives its layer. Padding rows never
reach a statistic: the kernel reads only the valid runs of rows (`ValidRows`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from srdd.formats import QuantStats, quant_stats
from srdd.scan.accumulate import ScanStats
from srdd.scan.rows import ValidRows

FormatSpec = tuple[str, str, dict]  # (key in the report, format name, options)


def linear_children(layer: nn.Module) -> dict[str, nn.Linear]:
    """Quantizable linears inside one decoder layer, by name relative to the layer
    (LoRA adapters excluded: they stay full precision)."""
    return {name: m for name, m in layer.named_modules()
            if isinstance(m, nn.Linear) and ".lora_" not in f".{name}"}


class SiteCapture:
    """Registers hooks on the decoder layers of a model; `rows` selects the non-pad rows of each batch,
    and only forwards run while `active` is true are measured (the full-precision reference)."""

    def __init__(self, layers: nn.ModuleList, stats: ScanStats, formats: list[FormatSpec],
                 sites: set[str]) -> None:
        self.stats = stats
        self.formats = formats
        self.sites = sites
        self.rows: ValidRows | None = None
        self.active = True
        self._cache: dict[int, tuple[torch.Tensor, list[QuantStats]]] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        for index, layer in enumerate(layers):
            self._handles.append(layer.register_forward_pre_hook(self._clear_cache))
            if "block_output" in sites:
                self._handles.append(layer.register_forward_hook(self._block_hook(index)))
            if "linear_input" in sites:
                for name, linear in linear_children(layer).items():
                    self._handles.append(linear.register_forward_pre_hook(self._linear_hook(index, name)))

    def _measure(self, t: torch.Tensor) -> list[QuantStats]:
        hit = self._cache.get(id(t))
        if hit is not None and hit[0] is t:
            return hit[1]
        parts = self.rows.views(t) if self.rows is not None else [t.detach().reshape(-1, t.shape[-1])]
        result = [sum((quant_stats(p, name, **options) for p in parts), QuantStats.empty())
                  for _, name, options in self.formats]
        self._cache[id(t)] = (t, result)
        return result

    def _clear_cache(self, module: nn.Module, args) -> None:
        self._cache.clear()

    def _block_hook(self, index: int) -> Callable:
        def hook(module: nn.Module, args, output) -> None:
            if not self.active:
                return
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            for (key, _, _), s in zip(self.formats, self._measure(hidden)):
                self.stats.layers[key][index].add_block_output(s)
        return hook

    def _linear_hook(self, index: int, name: str) -> Callable:
        def hook(module: nn.Module, args) -> None:
            if not self.active:
                return
            for (key, _, _), s in zip(self.formats, self._measure(args[0])):
                self.stats.layers[key][index].add_linear_input(name, s)
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._cache.clear()


def measure_weights(layers: nn.ModuleList, stats: ScanStats, formats: list[FormatSpec],
                    offload=None) -> None:
    """Weights do not depend on data: one pass over every linear's weight
    (offloaded layers are loaded for the measurement and released after)."""
    for index, layer in enumerate(layers):
        if offload is not None:
            offload.materialize(index)
        for name, linear in linear_children(layer).items():
            w = linear.weight.detach()
            for key, fmt, options in formats:
                stats.layers[key][index].weights[name] = quant_stats(w, fmt, **options)
        if offload is not None:
            offload.release(index)
