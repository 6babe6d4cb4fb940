"""Where srdd keeps what it builds once per machine (converted models, compiled kernels)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$SRDD_CACHE`, else ~/.cache/srdd."""
    return Path(os.environ.get("SRDD_CACHE", Path.home() / ".cache" / "srdd"))
