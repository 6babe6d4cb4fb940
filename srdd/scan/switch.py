"""Which decoder layers run quantized, switched per forward without a second copy of the model.

The reference (nothing quantized), the whole quantized model and the model
with one layer quantized (sensitivity) are the same modules with different
`quant_enabled` flags, so an offloaded model, which could never hold two
copies, gets all three. A plain model's decoder-layer linears are converted
to W4A4 under the scanned format for the duration of the block; a model that
already carries quantized linears (a policy rin_train rescans) is measured
under its own quantization, which must be the scanned format.
"""

from __future__ import annotations

from collections.abc import Collection

from torch import nn

from srdd.errors import SrddError
from srdd.qlinear import LinearQuantConfig, QuantLinear, QuantMode, quantize_linears, restore_linears


class LayerSwitch:
    """Context manager over a model's decoder layers; `quantize_only(layers)` picks which ones run quantized."""

    def __init__(self, layers: nn.ModuleList, fmt: str, options: dict) -> None:
        self.layers = layers
        self.config = LinearQuantConfig(fmt, QuantMode.W4A4, options, ())
        self.converted = False
        self.modules: list[list[QuantLinear]] = []
        self.label = self.config.label

    def __enter__(self) -> LayerSwitch:
        present = [m for m in self.layers.modules() if isinstance(m, QuantLinear)]
        if present:
            own = present[0].quant
            if (own.format, own.options) != (self.config.format, self.config.options):
                raise SrddError(f"the model's linears are already quantized under {own.label} "
                                f"{own.options or ''}; scan it under that format, or load it unquantized")
            self.label = own.label
        else:
            quantize_linears(self.layers, self.config)
            self.converted = True
        self.modules = [[m for m in layer.modules() if isinstance(m, QuantLinear)] for layer in self.layers]
        self._saved = [m.quant_enabled for ms in self.modules for m in ms]
        return self

    def __exit__(self, *exc) -> None:
        for m, enabled in zip((m for ms in self.modules for m in ms), self._saved):
            m.quant_enabled = enabled
        if self.converted:
            restore_linears(self.layers)

    @property
    def linears(self) -> int:
        return sum(len(ms) for ms in self.modules)

    def quantize_only(self, layers: Collection[int]) -> None:
        """From now on exactly the decoder layers in `layers` run quantized (none: the reference)."""
        for index, ms in enumerate(self.modules):
            for m in ms:
                m.quant_enabled = index in layers

    def quantize_all(self) -> None:
        self.quantize_only(range(len(self.modules)))
