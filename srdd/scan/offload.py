"""Layer-by-layer execution for models larger than memory.

The model is built with empty (meta) parameters; embeddings, final norm and
head are loaded, and each decoder layer's weights are read from the
safetensors files (memory-mapped) only while that layer runs, then dropped.
The model's own forward does the rest (masks, rotary embeddings), so any
decoder-only architecture works. Peak memory is about one layer plus the
hidden states: how a 7B model is scanned on a 24 GB laptop.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from srdd.errors import SrddError
from srdd.models import decoder_layers, resolve_model


def _weight_files(path: Path) -> dict[str, Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        mapping = json.loads(index.read_text())["weight_map"]
        return {k: path / v for k, v in mapping.items()}
    single = path / "model.safetensors"
    if not single.is_file():
        raise SrddError(f"--offload needs safetensors weights in {path} (model.safetensors or an index)")
    from safetensors import safe_open

    with safe_open(single, "pt") as f:
        return {k: single for k in f.keys()}


class OffloadedLayers:
    """Loads and releases decoder layers around their forward."""

    def __init__(self, model: nn.Module, files: dict[str, Path], dtype: torch.dtype, device: str) -> None:
        self.model, self.files, self.dtype, self.device = model, files, dtype, device
        self.layers = decoder_layers(model)
        names = {id(m): n for n, m in model.named_modules()}
        self.prefixes = [names[id(layer)] + "." for layer in self.layers]
        for i, layer in enumerate(self.layers):
            layer.register_forward_pre_hook(lambda m, a, i=i: self.materialize(i))
            layer.register_forward_hook(lambda m, a, o, i=i: self.release(i))

    def _load(self, keys: list[str]) -> None:
        from accelerate.utils import set_module_tensor_to_device
        from safetensors import safe_open

        by_file: dict[Path, list[str]] = {}
        for k in keys:
            by_file.setdefault(self.files[k], []).append(k)
        for file, ks in by_file.items():
            with safe_open(file, "pt") as f:
                for k in ks:
                    set_module_tensor_to_device(self.model, k, self.device, value=f.get_tensor(k).to(self.dtype))

    def load_rest(self) -> None:
        self._load([k for k in self.files if not any(k.startswith(p) for p in self.prefixes)])
        self.model.tie_weights()
        missing = [n for n, p in self.model.named_parameters()
                   if p.is_meta and not any(n.startswith(pre) for pre in self.prefixes)]
        if missing:
            raise SrddError(f"--offload: weights missing from the safetensors files: {missing[:5]}")

    def materialize(self, index: int) -> None:
        self._load([k for k in self.files if k.startswith(self.prefixes[index])])

    def release(self, index: int) -> None:
        self.layers[index].to("meta")


def load_offloaded(spec: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """(model, tokenizer) with decoder-layer weights left on disk until each layer runs."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(spec)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    offload = OffloadedLayers(model, _weight_files(path), dtype, device)
    offload.load_rest()
    model.srdd_offload = offload
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer
