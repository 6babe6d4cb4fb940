"""Model-level damage: how far the quantized model's next-token distributions are from the fp model's.

Per scored token t (a position whose next token is a real token of the same
sample): KL(P_fp || P_q) = sum_v p_fp(v) (log p_fp(v) - log p_q(v)) in nats,
whether the two argmaxes agree, and each model's negative log-likelihood of
the actual next token. The definitions follow llama.cpp's
`perplexity --kl-divergence`: the reference distribution comes first in the
KL, "same top" compares argmaxes (not the true token), perplexity is
exp(mean NLL) pooled over every scored token, and percentiles interpolate
linearly between the sorted per-token values. Unlike llama.cpp every position
of a sample is scored, not just the second half of a context window:
calibration samples are short prompts, not chunks of one long text.

Everything is computed in float64 from the models' logits and kept as
mergeable sums; the p99 needs the values themselves, which are kept (one
float per scored token: a few thousand per scan), so two `OutputStats` merge
exactly, percentiles included. A scan file holds the sums and the statistics,
not the per-token values: p99s of two files cannot be merged from the files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
import torch

CHUNK_BYTES = 1 << 24
"""Size of one [rows, vocab] float64 tensor of a chunk (16 MB: 42 rows of a 49k vocabulary, 13 of 152k). About
eight such tensors are alive at once (both models' logits, their log-softmaxes, p, the KL terms), so a chunk
costs ~130 MB whatever the vocabulary; 256-row chunks cost 0.8 GB at SmolLM2's and 2.5 GB at Qwen2.5's."""


def rows_per_chunk(vocab: int) -> int:
    return max(1, CHUNK_BYTES // (8 * max(1, vocab)))


@dataclass
class OutputStats:
    tokens: int = 0
    top1_same: int = 0
    nonfinite: int = 0
    """Tokens whose logits (either model's) hold NaN/Inf: excluded from every statistic, counted here."""
    sum_kl: float = 0.0
    sum_nll_fp: float = 0.0
    sum_nll_q: float = 0.0
    kl_values: list[np.ndarray] = field(default_factory=list)

    def __add__(self, other: OutputStats) -> OutputStats:
        """Counts and sums add, the per-token values concatenate: merging batches or ranks is exact."""
        return OutputStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def kl(self) -> np.ndarray:
        return np.concatenate(self.kl_values) if self.kl_values else np.zeros(0)

    def metrics(self) -> dict:
        """The block a scan file holds; only the counts when no token was scored (no NaN to write)."""
        if self.tokens == 0:
            return {"tokens": 0, "nonfinite_tokens": self.nonfinite}
        kl = self.kl()
        nll_fp, nll_q = self.sum_nll_fp / self.tokens, self.sum_nll_q / self.tokens
        return {
            "tokens": self.tokens,
            "kl_mean": self.sum_kl / self.tokens,
            "kl_p99": float(np.percentile(kl, 99, method="linear")),
            "kl_max": float(kl.max()),
            "top1_agreement": self.top1_same / self.tokens,
            "nll_fp": nll_fp,
            "nll_q": nll_q,
            "perplexity_fp": _exp(nll_fp),
            "perplexity_q": _exp(nll_q),
            "perplexity_ratio": _exp(nll_q - nll_fp),
            "nonfinite_tokens": self.nonfinite,
            "sums": {"tokens": self.tokens, "top1_same": self.top1_same, "nonfinite": self.nonfinite,
                     "sum_kl": self.sum_kl, "sum_nll_fp": self.sum_nll_fp, "sum_nll_q": self.sum_nll_q},
        }


def _exp(x: float) -> float | None:
    """exp(x), or None past float64's range (a file never holds Infinity)."""
    return math.exp(x) if x < 709.0 else None


@dataclass(frozen=True)
class NextTokens:
    """Where a batch's next-token predictions are scored: positions t with tokens t and t+1 both real."""

    select: torch.Tensor
    """[batch, seq-1] bool."""
    targets: torch.Tensor
    """[n] the actual next token of each scored position."""

    @classmethod
    def from_batch(cls, input_ids: torch.Tensor, mask: torch.Tensor) -> NextTokens:
        select = mask[:, :-1].bool() & mask[:, 1:].bool()
        return cls(select, input_ids[:, 1:][select])

    def rows(self, logits: torch.Tensor) -> torch.Tensor:
        """[n, vocab] logits of the scored positions, on the CPU."""
        return logits[:, :-1][self.select.to(logits.device)].cpu()


def output_stats(ref: torch.Tensor, quant: torch.Tensor, targets: torch.Tensor) -> OutputStats:
    """Statistics of [n, vocab] reference and quantized logits, `targets` [n] the actual next tokens."""
    out = OutputStats()
    rows = rows_per_chunk(ref.shape[-1])
    for start in range(0, ref.shape[0], rows):
        part = slice(start, start + rows)
        out = out + _chunk(ref[part].double(), quant[part].double(), targets[part])
    return out


def _chunk(ref: torch.Tensor, quant: torch.Tensor, targets: torch.Tensor) -> OutputStats:
    finite = torch.isfinite(ref).all(-1) & torch.isfinite(quant).all(-1)
    ref, quant, targets = ref[finite], quant[finite], targets[finite]
    log_p, log_q = torch.log_softmax(ref, -1), torch.log_softmax(quant, -1)
    p = log_p.exp()
    # p = 0 (an underflowed probability) contributes 0, never 0 * inf; rounding can leave -1e-17: KL >= 0.
    kl = torch.where(p > 0, p * (log_p - log_q), 0.0).sum(-1).clamp_min(0.0)
    picked = targets.unsqueeze(-1)
    return OutputStats(
        tokens=int(finite.sum()),
        top1_same=int((ref.argmax(-1) == quant.argmax(-1)).sum()),
        nonfinite=int((~finite).sum()),
        sum_kl=float(kl.sum()),
        sum_nll_fp=float(-log_p.gather(-1, picked).sum()),
        sum_nll_q=float(-log_q.gather(-1, picked).sum()),
        kl_values=[kl.numpy()],
    )
