"""A model directory's safetensors files, read without touching the weights.

A safetensors file starts with an 8-byte little-endian header length and a
JSON header giving every tensor's dtype, shape and byte range. Reading only
that header tells how big a model is (to decide on offload before loading)
and gives a cheap fingerprint of the file (for provenance).

Every header and index is checked before anything uses it, because both come
from files anyone can hand us: the header's length within the file and a bound,
each tensor's dtype, shape and byte range of the right types and inside the data,
and every shard an index names a file inside the model directory (an entry such
as `../../../../etc/passwd` would otherwise be opened and parsed).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from srdd.errors import SrddError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
MAX_HEADER = 100 * 1024 * 1024
MAX_INDEX = 64 * 1024 * 1024


def _check_entry(path: Path, name: str, info: object, data: int) -> None:
    if not isinstance(info, dict):
        raise SrddError(f"{path} is corrupt (tensor {name[:80]!r} is not described by a mapping)")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(info.get("dtype"), str) or not (
            isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise SrddError(f"{path} is corrupt (tensor {name[:80]!r} has no valid dtype and shape)")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data):
        raise SrddError(f"{path} is truncated or corrupt (tensor {name[:80]!r} lies outside the file)")


def read_header(path: Path) -> tuple[bytes, dict]:
    """(raw header bytes, parsed header) of one safetensors file, every entry checked."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise SrddError(f"{path} is truncated (no safetensors header)")
            (length,) = struct.unpack("<Q", raw)
            if length > min(size - 8, MAX_HEADER):
                raise SrddError(f"{path} is truncated or corrupt (header of {length} bytes in a {size}-byte file)")
            raw = f.read(length)
        header = json.loads(raw)
    except OSError as exc:
        raise SrddError(f"{path} is not a readable safetensors file: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise SrddError(f"{path} is corrupt (its safetensors header is not JSON)") from None
    if not isinstance(header, dict):
        raise SrddError(f"{path} is corrupt (its safetensors header is not a JSON object)")
    for name, info in header.items():
        if name != "__metadata__":
            _check_entry(path, name, info, size - 8 - length)
    return raw, header


def read_index(path: Path) -> dict[str, Path]:
    """Tensor name -> shard file of a model directory's index, every shard a file inside `path`."""
    index = path / INDEX_NAME
    try:
        if index.stat().st_size > MAX_INDEX:
            raise SrddError(f"{index} is larger than {MAX_INDEX} bytes; not a safetensors index")
        doc = json.loads(index.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SrddError(f"{index} is not readable: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise SrddError(f"{index} is not valid JSON") from None
    mapping = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(mapping, dict) or not mapping:
        raise SrddError(f"{index} has no 'weight_map' (tensor name -> shard file)")
    root = path.resolve()
    out: dict[str, Path] = {}
    for name, shard in mapping.items():
        if not isinstance(shard, str) or not shard:
            raise SrddError(f"{index}: weight_map[{name[:80]!r}] is not a file name")
        file = path / shard
        if root not in file.resolve().parents:
            raise SrddError(f"{index}: weight_map[{name[:80]!r}] = {shard[:80]!r} lies outside the model directory")
        if not file.is_file():
            raise SrddError(f"{index}: weight_map[{name[:80]!r}] names {shard[:80]!r}, which does not exist")
        out[name] = file
    return out


def shard_files(path: Path) -> list[Path]:
    """The safetensors files holding a model directory's weights (empty when it has none)."""
    if (path / INDEX_NAME).is_file():
        return sorted(set(read_index(path).values()))
    single = path / SINGLE_NAME
    return [single] if single.is_file() else []


def weight_files(path: Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it."""
    if (path / INDEX_NAME).is_file():
        return read_index(path)
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
