"""Whether a model fits in memory for a scan, decided before anything is loaded.

The weights' size at the scan dtype comes from the safetensors headers (no
weight is read); the memory available from the OS (MemAvailable) or, on CUDA,
the GPU's free memory. Both scan modes hold one copy of the weights (a
propagated scan quantizes the model's own linears in place, each weight
transiently). The model fits when the weights stay under FIT_FRACTION of what
is available, which leaves room for activations, the tokenizer and the
allocator.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from srdd.weights import parameter_count

FIT_FRACTION = 0.8
GIB = 1 << 30


def available_bytes(device: str) -> int:
    """Memory a model loaded on `device` can use now."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class OffloadDecision:
    offload: bool
    reason: str
    needed_bytes: int | None
    """Estimated bytes of the weights at the scan dtype; None when forced or unknown."""
    available_bytes: int | None

    def to_dict(self) -> dict:
        return {"enabled": self.offload, "reason": self.reason, "needed_bytes": self.needed_bytes,
                "available_bytes": self.available_bytes}


def decide_offload(path: Path, dtype: torch.dtype, device: str, *, force: bool | None,
                   limit_bytes: int | None = None) -> OffloadDecision:
    """Offload when forced, or when the weights at `dtype` would not fit in `limit_bytes`
    (default: the memory available on `device`) with the margin FIT_FRACTION."""
    if force is not None:
        return OffloadDecision(force, "offloading layer by layer (--offload)" if force else "loading whole (--no-offload)",
                              None, None)
    count = parameter_count(path)
    if count is None:
        return OffloadDecision(False, "size unknown (no safetensors headers): loading whole", None, None)
    needed = count * torch.empty((), dtype=dtype).element_size()
    available = limit_bytes if limit_bytes is not None else available_bytes(device)
    where = "allowed by --max-memory" if limit_bytes is not None else f"available on {device}"
    size = f"{needed / GIB:.1f} GiB in {str(dtype).removeprefix('torch.')}"
    if needed <= FIT_FRACTION * available:
        return OffloadDecision(False, f"weights need {size}, {available / GIB:.1f} GiB {where}", needed, available)
    return OffloadDecision(True, f"weights need {size} but only {available / GIB:.1f} GiB is {where}: "
                                 "offloading layer by layer (--no-offload to load it whole)", needed, available)
