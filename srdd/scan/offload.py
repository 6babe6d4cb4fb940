"""Layer-by-layer execution for models larger than memory.

The model is built with empty (meta) parameters; embeddings, final norm and
head are loaded, and each decoder layer's weights are read from the
safetensors files (memory-mapped) only while that layer runs, then dropped
(together with any fake-quantized copy a QuantLinear cached of them). The
model's own forward does the rest (masks, rotary embeddings), so any
decoder-only architecture works, quantized in place or not. Peak memory is
about one layer plus the hidden states: how a 7B model is scanned on a 24 GB
laptop. On CUDA one layer at a time sits on the GPU.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from srdd.errors import SrddError
from srdd.models import ResolvedModel, decoder_layers, resolve_model
from srdd.qlinear import QuantLinear
from srdd.weights import weight_files


M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 1 << 20


def keep_large_tensors_mmapped() -> None:
    """Fix glibc's mmap threshold at 1 MiB for this process.

    glibc raises the threshold to the size of every mmapped block that is freed, after which a released
    layer's weights and their fake-quantized copies are allocated on the heap, whose fragmentation makes the
    peak grow with depth (measured on a tiny 512-wide model under a W4A4 forward: +63 MiB for 6 more layers;
    +2 MiB with the threshold fixed). Fixed, large tensors stay mmapped and go back to the OS on release.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: no dynamic threshold to pin
        return
    libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


class OffloadedLayers:
    """Loads and releases decoder layers around their forward; `on_release(index)` is told of each layer done."""

    def __init__(self, model: nn.Module, files: dict[str, Path], dtype: torch.dtype, device: str) -> None:
        self.model, self.files, self.dtype, self.device = model, files, dtype, device
        self.layers = decoder_layers(model)
        self.on_release: Callable[[int], None] | None = None
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
        from accelerate.utils import set_module_tensor_to_device

        self._load([k for k in self.files if not any(k.startswith(p) for p in self.prefixes)])
        self.model.tie_weights()
        for name, buffer in self.model.named_buffers():  # built on the CPU (rotary inv_freq): follow the weights
            if not any(name.startswith(p) for p in self.prefixes) and buffer.device != torch.device(self.device):
                set_module_tensor_to_device(self.model, name, self.device, value=buffer)
        missing = [n for n, p in self.model.named_parameters()
                   if p.is_meta and not any(n.startswith(pre) for pre in self.prefixes)]
        if missing:
            raise SrddError(f"offloading: weights missing from the safetensors files: {missing[:5]}")

    def materialize(self, index: int) -> None:
        self._load([k for k in self.files if k.startswith(self.prefixes[index])])

    def release(self, index: int) -> None:
        layer = self.layers[index]
        for module in layer.modules():
            if isinstance(module, QuantLinear):
                module.drop_weight_cache()
        layer.to("meta")
        if self.on_release is not None:
            self.on_release(index)


def load_offloaded(model: str | ResolvedModel, *, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """(model, tokenizer) with decoder-layer weights left on disk until each layer runs."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = (model if isinstance(model, ResolvedModel) else resolve_model(model)).path
    keep_large_tensors_mmapped()
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    with init_empty_weights(include_buffers=False):
        lm = AutoModelForCausalLM.from_config(config, dtype=dtype)
    offload = OffloadedLayers(lm, weight_files(path), dtype, device)
    offload.load_rest()
    lm.srdd_offload = offload
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return lm.eval(), tokenizer
