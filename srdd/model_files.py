"""Checks of a local model's files before any loader parses them.

A loader that meets an empty or random `.gguf`, a truncated safetensors file or a
pickle checkpoint fails deep inside numpy, safetensors or torch with a traceback
(or, for pickle, would execute code were it not for weights_only). These checks
read only headers: the GGUF magic, each safetensors header (its declared length
within the file, valid JSON, every tensor's byte range inside the data), and they
refuse directories whose weights exist only as pickle files.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from srdd.errors import SrddError

GGUF_MAGIC = b"GGUF"
MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024
PICKLE_WEIGHTS = ("pytorch_model.bin", "model.bin", "pytorch_model.bin.index.json")


def check_gguf(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(8)
    if len(head) < 8 or not head.startswith(GGUF_MAGIC):
        raise SrddError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")


def check_safetensors(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise SrddError(f"{path} is truncated (no safetensors header)")
        (length,) = struct.unpack("<Q", raw)
        if length > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise SrddError(f"{path} is truncated or corrupt (header of {length} bytes in a {size}-byte file)")
        try:
            header = json.loads(fh.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SrddError(f"{path} is corrupt (its safetensors header is not JSON)") from None
    data = size - 8 - length
    for name, info in (header.items() if isinstance(header, dict) else []):
        if name == "__metadata__":
            continue
        offsets = info.get("data_offsets") if isinstance(info, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and 0 <= offsets[0] <= offsets[1] <= data):
            raise SrddError(f"{path} is truncated or corrupt (tensor {name!r} lies outside the file)")


def check_model_files(spec: str) -> None:
    """Refuse a local model whose weight files a loader would choke on; other specs pass through."""
    path = Path(spec)
    if path.is_file() and path.suffix.lower() == ".gguf":
        check_gguf(path)
    elif path.is_dir() and (path / "config.json").is_file():
        tensors = sorted(path.glob("*.safetensors"))
        if not tensors and any((path / name).exists() for name in PICKLE_WEIGHTS):
            raise SrddError(f"{path} holds its weights only as a pickle checkpoint (pytorch_model.bin); srdd loads "
                            "safetensors only (pickle can run code): convert it with save_pretrained("
                            "safe_serialization=True)")
        for file in tensors:
            check_safetensors(file)
