"""Propagated mode: how far each layer's output drifts when the whole model runs quantized.

The model runs each batch twice, its linears quantized in place: first with
quantization off (the reference), whose layer outputs are kept (valid rows
only), then W4A4, whose layer outputs are compared with the reference ones
(the same two forwards give the model-level fidelity, srdd.scan.fidelity). The statistics are the same sums as the
isolated mode, with q = the quantized model's output and x = the reference's.
"""

from __future__ import annotations

import torch
from torch import nn

from srdd.formats import QuantStats
from srdd.scan.accumulate import ScanStats
from srdd.scan.rows import ValidRows


def pair_stats(x: torch.Tensor, q: torch.Tensor) -> QuantStats:
    """QuantStats of an arbitrary (reference, approximation) pair, float64 sums."""
    xd, qd = x.double(), q.double()
    valid = torch.isfinite(xd) & torch.isfinite(qd)
    xd, qd = torch.where(valid, xd, 0.0), torch.where(valid, qd, 0.0)
    nz = valid & (xd != 0)
    d = qd - xd
    x2 = xd * xd
    return QuantStats(
        numel=x.numel(),
        nonzero=int(nz.sum()),
        deadzone=int((nz & (qd == 0)).sum()),
        saturated=0,
        nonfinite=int((~valid).sum()),
        sum_x2=float(x2.sum()),
        sum_x4=float((x2 * x2).sum()),
        sum_err2=float((d * d).sum()),
        sum_rel=float(torch.where(nz, d.abs() / torch.where(nz, xd.abs(), 1.0), 0.0).sum()),
        amax=float(xd.abs().max()) if x.numel() else 0.0,
    )


class PropagatedCapture:
    """One hook per decoder layer: keeps its output while `reference` is true, compares it with the kept one
    otherwise; forwards run while `active` is false (sensitivity) are ignored."""

    def __init__(self, layers: nn.ModuleList, stats: ScanStats, key: str) -> None:
        self.stats = stats
        self.key = key
        self.rows: ValidRows | None = None
        self.reference = True
        self.active = True
        self._reference: dict[int, torch.Tensor] = {}
        self._handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(layers)]

    def _rows(self, output) -> torch.Tensor:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        return self.rows.gather(hidden) if self.rows is not None else hidden.detach().reshape(-1, hidden.shape[-1])

    def _hook(self, index: int):
        def hook(module, args, output) -> None:
            if not self.active:
                return
            if self.reference:
                self._reference[index] = self._rows(output)
                return
            reference = self._reference.pop(index)
            self.stats.layers[self.key][index].add_block_output(pair_stats(reference, self._rows(output)))
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._reference.clear()
