"""Fixtures shared by the TRL engine's tests."""

import pytest
import torch


@pytest.fixture
def threads(monkeypatch):
    """torch on `n` threads that wait passively (update passes then run on one thread each, side by side)."""
    previous = torch.get_num_threads()
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")

    def use(n: int) -> None:
        torch.set_num_threads(n)

    yield use
    torch.set_num_threads(previous)
