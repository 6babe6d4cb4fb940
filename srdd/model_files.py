"""Checks of a local model's files before any loader parses them.

A loader that meets an empty or random `.gguf`, a truncated safetensors file or a
pickle checkpoint fails deep inside numpy, safetensors or torch with a traceback
(or, for pickle, would execute code were it not for weights_only). These checks
read only headers: the GGUF magic, each safetensors header and the shard index
(`srdd.weights`), and they refuse directories whose weights exist only as pickle files
(a pickle beside some other `*.safetensors` file included).
"""

from __future__ import annotations

from pathlib import Path

from srdd.errors import SrddError
from srdd.weights import INDEX_NAME, SINGLE_NAME, read_header, read_index

GGUF_MAGIC = b"GGUF"
PICKLE_WEIGHTS = ("pytorch_model.bin", "model.bin", "pytorch_model.bin.index.json")


def check_gguf(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(8)
    if len(head) < 8 or not head.startswith(GGUF_MAGIC):
        raise SrddError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")


def check_model_files(spec: str) -> None:
    """Refuse a local model whose weight files a loader would choke on; other specs pass through."""
    path = Path(spec)
    if path.is_file() and path.suffix.lower() == ".gguf":
        check_gguf(path)
    elif path.is_dir() and (path / "config.json").is_file():
        # transformers loads model.safetensors or its index when present; any other *.safetensors beside a
        # pickle (an adapter, a stray file) would let the pickle be loaded instead
        weights = (path / SINGLE_NAME).is_file() or (path / INDEX_NAME).is_file()
        if not weights and any((path / name).exists() for name in PICKLE_WEIGHTS):
            raise SrddError(f"{path} holds its weights only as a pickle checkpoint (pytorch_model.bin); srdd loads "
                            "safetensors only (pickle can run code): convert it with save_pretrained("
                            "safe_serialization=True)")
        if (path / INDEX_NAME).is_file():
            read_index(path)
        for file in sorted(path.glob("*.safetensors")):
            read_header(file)
