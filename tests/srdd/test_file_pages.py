"""srdd.file_pages: a mapped weight's clean pages leave the process and come back unchanged; a written one never
leaves (its write would be lost)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from srdd import file_pages
from srdd.models import load_causal_lm
from srdd.qlinear import LinearQuantConfig, QuantMode, quantize_linears
from srdd.tiny import build_tiny_llama

pytestmark = pytest.mark.skipif(not (sys.platform.startswith("linux") and Path("/proc/self/pagemap").exists()),
                                reason="needs Linux's /proc/self/pagemap")


def resident_pages(t: torch.Tensor) -> int:
    """How many of the whole pages inside `t` are mapped into this process now (pagemap's present bit)."""
    page = file_pages.PAGE
    lo = (t.data_ptr() + page - 1) // page
    hi = (t.data_ptr() + t.numel() * t.element_size()) // page
    with open("/proc/self/pagemap", "rb") as fh:
        fh.seek(lo * 8)
        entries = np.frombuffer(fh.read((hi - lo) * 8), dtype=np.uint64)
    return int(((entries >> np.uint64(63)) & np.uint64(1)).sum())


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """1 MiB linears: each holds 255 or 256 whole pages of the safetensors file."""
    return build_tiny_llama(tmp_path_factory.mktemp("wide"), layers=1, hidden=256, intermediate=1024)


def test_clean_pages_of_a_mapped_weight_are_released_and_read_back_unchanged(model_dir):
    model, _ = load_causal_lm(str(model_dir))
    w = model.model.layers[0].mlp.up_proj.weight.detach()
    before = w.clone()
    assert resident_pages(w) > 200  # the clone read every page
    released = file_pages.release(w)
    assert released >= 255 * file_pages.PAGE and resident_pages(w) == 0
    assert torch.equal(w.view(torch.int32), before.view(torch.int32))  # read back from the page cache
    assert resident_pages(w) > 200


def test_a_written_weight_keeps_its_pages_and_its_write(model_dir):
    model, _ = load_causal_lm(str(model_dir))
    w = model.model.layers[0].mlp.down_proj.weight.detach()
    assert w.sum().isfinite()  # every page read, so every page resident
    middle = w.numel() // 2
    w.view(-1)[middle] = 12345.0  # copy-on-write: this page is now the process's own
    assert file_pages.release(w) == 0
    assert w.view(-1)[middle].item() == 12345.0
    assert resident_pages(w) > 200


def test_memory_that_is_no_file_mapping_is_left_alone():
    x = torch.randn(1024, 1024)
    before = x.clone()
    assert file_pages.release(x) == 0 and torch.equal(x, before) and resident_pages(x) > 250


def test_a_frozen_quantized_linear_gives_its_weight_back_once_its_buffer_holds_it(model_dir):
    """After the quantized buffer is computed the GEMMs read it, not the parameter; the output is the same
    before and after the weight's pages left, and the weight is only read again by the next refresh."""
    model, _ = load_causal_lm(str(model_dir))
    model.requires_grad_(False)
    quantize_linears(model, LinearQuantConfig(format="nvfp4", mode=QuantMode.W4A16))
    layer = model.model.layers[0].mlp.up_proj
    x = torch.randn(3, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = layer(x)
        assert resident_pages(layer.weight) == 0
        assert torch.equal(layer(x).view(torch.int32), first.view(torch.int32))
        assert resident_pages(layer.weight) == 0
        layer.serve(layer.weight * 1.01)  # a noise write reads the weight, then gives it back
        assert resident_pages(layer.weight) == 0
