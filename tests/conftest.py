"""Fixtures shared across areas: tiny random Llama models saved as HF directories."""

from __future__ import annotations

import os
from pathlib import Path

# Tests never reach a model hub. srdd itself leaves the hub's settings alone, so the suite sets this
# before anything imports huggingface_hub; subprocesses inherit it.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest

from srdd.tiny import build_tiny_llama

__all__ = ["build_tiny_llama"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")
