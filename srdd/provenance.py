"""What a result file records about where it came from: versions, machine, command line, model files.

Fingerprints are cheap on purpose (a 15 GB checkpoint is not re-read to hash
it): a safetensors file is identified by its size and the sha256 of its JSON
header, which names every tensor with its dtype, shape and byte offsets; other
small files (config, tokenizer) are hashed whole, a large non-safetensors file
(GGUF) by its size and its first MiB.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from importlib import metadata
from pathlib import Path

import torch

from srdd import __version__
from srdd.weights import read_header

PACKAGES: tuple[str, ...] = ("torch", "transformers", "huggingface_hub", "safetensors", "accelerate", "trl", "peft",
                             "verl")
SMALL_FILE_BYTES = 1 << 20
FINGERPRINT_SUFFIXES: tuple[str, ...] = (".safetensors", ".json", ".gguf", ".model", ".txt")


def versions() -> dict:
    """Versions of the interpreter and the libraries srdd depends on (None when not installed)."""
    out = {"python": platform.python_version(), "srdd": __version__}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict:
    """Device, CPU model, threads and (on CUDA) the GPU's name."""
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None
    return {"device": device, "cpu": cpu_model(), "threads": torch.get_num_threads(), "gpu": gpu,
            "platform": platform.platform()}


def command_line() -> list[str]:
    return [Path(sys.argv[0]).name, *sys.argv[1:]]


def file_fingerprint(path: Path) -> dict:
    size = path.stat().st_size
    if path.suffix == ".safetensors":
        return {"size": size, "header_sha256": hashlib.sha256(read_header(path)[0]).hexdigest()}
    with open(path, "rb") as f:
        head = f.read(SMALL_FILE_BYTES)
    key = "sha256" if size <= SMALL_FILE_BYTES else "head_sha256"
    return {"size": size, key: hashlib.sha256(head).hexdigest()}


def fingerprints(path: Path) -> dict[str, dict]:
    """Fingerprints of a model file, or of the model files in a directory, by name."""
    if path.is_file():
        return {path.name: file_fingerprint(path)}
    return {p.name: file_fingerprint(p) for p in sorted(path.iterdir())
            if p.is_file() and p.suffix in FINGERPRINT_SUFFIXES}
