"""Which rows of a [batch, seq, hidden] activation are real tokens (padding never counts).

Padded positions form at most one gap per sequence, so the valid rows of the
flattened [batch*seq, hidden] view are a few runs of consecutive rows; the
statistics kernel reads each run as a view, with no gather copy (and one run,
one call, when nothing is padded).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ValidRows:
    total: int
    """Rows of the flattened batch (batch * seq); activations of any other shape are taken whole."""
    runs: tuple[tuple[int, int], ...]
    """Half-open [start, end) ranges of valid rows, in order."""

    @classmethod
    def from_mask(cls, mask: torch.Tensor) -> ValidRows:
        flat = mask.reshape(-1).to(torch.int8).cpu()
        edges = torch.diff(flat, prepend=flat.new_zeros(1), append=flat.new_zeros(1))
        starts = (edges == 1).nonzero().flatten().tolist()
        ends = (edges == -1).nonzero().flatten().tolist()
        return cls(flat.numel(), tuple(zip(starts, ends)))

    def views(self, t: torch.Tensor) -> list[torch.Tensor]:
        """The valid rows of `t` as 2-D views [rows, hidden]."""
        rows = t.detach().reshape(-1, t.shape[-1])
        if rows.shape[0] != self.total:
            return [rows]
        return [rows[start:end] for start, end in self.runs]

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """The valid rows of `t` copied into one tensor that later in-place ops on `t` cannot touch."""
        return torch.cat(self.views(t))
