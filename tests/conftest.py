"""Fixtures shared across areas: tiny random Llama models saved as HF directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from srdd.tiny import build_tiny_llama

__all__ = ["build_tiny_llama"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")
