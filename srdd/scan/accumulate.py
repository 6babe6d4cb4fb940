"""Per-format, per-layer, per-site running QuantStats.

Everything is a mergeable sum (srdd.formats.QuantStats), so batches add up
exactly and two partial scans of the same model could be merged the same way.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from srdd.formats import QuantStats

SITES = ("block_output", "linear_input", "weight")


@dataclass
class LayerStats:
    block_output: QuantStats = field(default_factory=QuantStats.empty)
    linear_inputs: dict[str, QuantStats] = field(default_factory=lambda: defaultdict(QuantStats.empty))
    weights: dict[str, QuantStats] = field(default_factory=dict)

    def add_block_output(self, s: QuantStats) -> None:
        self.block_output = self.block_output + s

    def add_linear_input(self, name: str, s: QuantStats) -> None:
        self.linear_inputs[name] = self.linear_inputs[name] + s


@dataclass
class ScanStats:
    """stats[format_key][layer] -> LayerStats."""

    num_layers: int
    formats: list[str]
    layers: dict[str, list[LayerStats]] = field(init=False)

    def __post_init__(self) -> None:
        self.layers = {f: [LayerStats() for _ in range(self.num_layers)] for f in self.formats}
