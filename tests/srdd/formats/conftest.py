import math

import numpy as np
import pytest
import torch

from srdd.formats import set_backend
from srdd.formats.stats import QuantStats

TENSOR_SCALED = ("fp8_e4m3", "nvfp4")
"""Formats with a per-tensor scale: one NaN/Inf anywhere makes the whole result NaN."""


@pytest.fixture(autouse=True)
def eager_backend():
    """Exactness tests run the eager path (same bits as compiled; see test_compiled.py)."""
    set_backend("eager")
    yield
    set_backend("auto")


def bits(t: torch.Tensor) -> np.ndarray:
    """Bit patterns with every NaN canonicalised, so NaN positions compare but payloads don't."""
    t = t.detach().to(torch.float32).clone()
    t[torch.isnan(t)] = float("nan")
    return t.numpy().view(np.int32)


def edge_matrix(seed: int = 0) -> torch.Tensor:
    """Rows of 32 covering the DESIGN.md §2 edge cases (one block per row for MX)."""
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randn(32, generator=g)]
    heavy = torch.randn(32, generator=g) * 0.01
    heavy[5] = 40.0
    rows.append(heavy)
    rows.append(torch.zeros(32))
    neg0 = torch.zeros(32)
    neg0[3] = -0.0
    neg0[4] = -1.0
    rows.append(neg0)
    rows.append(torch.randn(32, generator=g) * 2.0**-130)   # fp32 subnormal block
    rows.append(torch.randn(32, generator=g) * 2.0**-125)   # tiny normal block
    huge = torch.randn(32, generator=g).clamp(-1, 1) * 3.0e38
    huge[0] = 3.4028234663852886e38
    rows.append(huge)
    for base in (1.0, 6.0, 1.75):
        for k in (-3, 0, 5):
            v = base * 2.0**k
            for delta in (-1, 0, 1):
                r = torch.randn(32, generator=g).clamp(-0.9, 0.9) * v
                r[7] = torch.nextafter(torch.tensor(v), torch.tensor(v * 4 if delta > 0 else 0.0)).item() \
                    if delta else v
                rows.append(r)
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 6.0] * 4)
    ties[8:16] *= -1
    rows.append(ties)
    nan = torch.randn(32, generator=g)
    nan[9] = float("nan")
    rows.append(nan)
    inf = torch.randn(32, generator=g)
    inf[2] = float("-inf")
    rows.append(inf)
    return torch.stack(rows)


def extreme_rows() -> torch.Tensor:
    """Rows of 32 whose block max sits at, or one ulp either side of, 2^k, 6*2^k and 1.75*2^k
    for binades at the ends of the fp32 range (subnormal, E8M0 clamp, near FLT_MAX)."""
    g = torch.Generator().manual_seed(99)
    rows = []
    cases = [(1.0, k) for k in (-149, -140, -127, -126, -125, -124, 60, 125, 127)]
    cases += [(6.0, k) for k in (-147, -128, -127, -126, -125, 124, 125)]
    cases += [(1.75, k) for k in (-148, -127, -126, 126)]
    for base, k in cases:
        v = torch.tensor(base * 2.0**k, dtype=torch.float32)
        for nb in (torch.nextafter(v, torch.tensor(0.0)), v, torch.nextafter(v, torch.tensor(float("inf")))):
            if not torch.isfinite(nb) or nb == 0:
                continue
            r = (torch.rand(32, generator=g) * 2 - 1) * nb
            r[::5] = r[::5] * 2.0**-20  # small elements far below the block max
            r[11] = nb
            r[12] = -nb * 0.75
            rows.append(r)
    flt_max = torch.tensor(3.4028234663852886e38)
    rows.append(torch.full((32,), -3.0e38).index_fill_(0, torch.tensor([3]), flt_max))
    return torch.stack(rows).to(torch.float32)


def random_matrix(seed: int = 0) -> torch.Tensor:
    """Random rows at varied scales, Student-t heavy tails and planted outliers."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(12, 96, generator=g) * torch.exp2(torch.randint(-20, 20, (12, 1), generator=g).float())
    t = torch.randn(12, 96, generator=g) / torch.rand(12, 96, generator=g).clamp_min(1e-6) ** 0.7 * 0.02
    t[torch.rand(12, 96, generator=g) < 0.02] *= 1000.0
    return torch.cat([x, t]).to(torch.float32)


def assert_same_stats(expected: QuantStats, got: QuantStats) -> None:
    """Counts and amax equal; float64 sums equal up to the order of their additions.

    The sums add numel non-negative terms in an order that depends on the path and the CPU's vector width;
    any order ends within (n - 1) * u * Sum|terms| (u = 2^-53) of the exact sum, so two orders agree to
    within twice that, and Sum|terms| is the sum itself.
    """
    bound = 2 * max(expected.numel - 1, 0) * 2.0**-53
    for key, value in expected.to_dict().items():
        if isinstance(value, int) or key == "amax":
            assert getattr(got, key) == value, key
        else:
            assert math.isclose(getattr(got, key), value, rel_tol=bound, abs_tol=0.0), (key, getattr(got, key), value)


def planted_tensor(dtype: torch.dtype, fmt: str, options: dict) -> torch.Tensor:
    """300x256 at varied scales (above the compile threshold) with every edge row planted in it."""
    g = torch.Generator().manual_seed(21)
    x = torch.randn(300, 256, generator=g) * torch.exp2(torch.randint(-8, 8, (300, 1), generator=g).float())
    edges = edge_matrix()
    if fmt in TENSOR_SCALED and options.get("per_tensor_scale", True):
        edges = edges[:-2]  # one NaN/Inf would make the whole tensor NaN: checked separately
    x[: edges.shape[0], :32] = edges
    extreme = extreme_rows()
    x[: extreme.shape[0], 64:96] = extreme
    x[100:110, 128:160] = 0.0
    x[105, 130] = -0.0
    if dtype is torch.float16:
        x = x * 1e-3
    big = torch.finfo(dtype).max  # FLT_MAX would round to inf in bf16 and poison tensor scales
    return torch.where(x.abs() > big, x.sign() * big, x).to(dtype)
