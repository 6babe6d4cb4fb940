"""A model directory's safetensors files, read without touching the weights.

A safetensors file starts with an 8-byte little-endian header length and a
JSON header giving every tensor's dtype, shape and byte range. Reading only
that header tells how big a model is (to decide on offload before loading)
and gives a cheap fingerprint of the file (for provenance).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from srdd.errors import SrddError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


def read_header(path: Path) -> tuple[bytes, dict]:
    """(raw header bytes, parsed header) of one safetensors file."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            raw = f.read(length)
        return raw, json.loads(raw)
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SrddError(f"{path} is not a readable safetensors file: {exc}") from None


def shard_files(path: Path) -> list[Path]:
    """The safetensors files holding a model directory's weights (empty when it has none)."""
    index = path / INDEX_NAME
    if index.is_file():
        mapping = json.loads(index.read_text())["weight_map"]
        return sorted({path / v for v in mapping.values()})
    single = path / SINGLE_NAME
    return [single] if single.is_file() else []


def weight_files(path: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it."""
    index = path / INDEX_NAME
    if index.is_file():
        return {k: path / v for k, v in json.loads(index.read_text())["weight_map"].items()}
    files = shard_files(path)
    if not files:
        raise SrddError(f"offloading needs safetensors weights in {path} ({SINGLE_NAME} or {INDEX_NAME})")
    return {k: files[0] for k in read_header(files[0])[1] if k != "__metadata__"}


def parameter_count(path: Path) -> int | None:
    """Elements in all of a model directory's safetensors tensors, from the headers; None without safetensors."""
    files = shard_files(path)
    if not files:
        return None
    return sum(math.prod(entry["shape"]) for f in files for name, entry in read_header(f)[1].items()
               if name != "__metadata__")
