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


QWEN_REPO = "Qwen/Qwen2.5-7B"
QWEN_COMMIT = "3f1d5e9c0a7b2468ace13579bdf02468ace13579"


@pytest.fixture(scope="session")
def qwen_hub(tmp_path_factory) -> Path:
    """A Hugging Face hub cache holding a tiny random Qwen2 as Qwen/Qwen2.5-7B (refs/main -> QWEN_COMMIT)."""
    from srdd.tiny import hub_snapshot

    hub = tmp_path_factory.mktemp("hf") / "hub"
    build_tiny_llama(hub_snapshot(hub, QWEN_REPO, commit=QWEN_COMMIT), architecture="qwen2")
    return hub


@pytest.fixture
def offline_hub(qwen_hub, monkeypatch) -> Path:
    """`qwen_hub` as this process's (and its subprocesses') offline Hugging Face cache."""
    from huggingface_hub import constants

    for name, value in (("HF_HOME", str(qwen_hub.parent)), ("HF_HUB_CACHE", str(qwen_hub))):
        monkeypatch.setenv(name, value)
        monkeypatch.setattr(constants, name, value)  # huggingface_hub reads its environment once, at import
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return qwen_hub
