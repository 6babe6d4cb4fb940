"""A test double for a master copy kept on another device than its parameter (the verl rollout keeps its
fp32 masters in pinned CPU memory beside CUDA weights), so that a CPU-only suite sees the mixed-device
operations a GPU would refuse."""

from __future__ import annotations

import pytest
import torch

HOME = torch.device("meta")
"""The device a HostOnly master reports: not the parameter's, so moving it "to its own device" is caught."""


class MixedDeviceError(AssertionError):
    pass


def _moves_to_another_device(func, args, kwargs) -> bool:
    """Tensor.to(device[, ...]) or Tensor.to(other_tensor) naming a device other than the master's own."""
    if func is not torch.Tensor.to:
        return False
    target = kwargs.get("device")
    for arg in args[1:]:
        if isinstance(arg, (str, torch.device)):
            target = arg
        elif isinstance(arg, torch.Tensor):
            target = arg.device
    return target is not None and torch.device(target) != HOME


class HostOnly(torch.Tensor):
    """A master that may only be moved: copied into a parameter (param.copy_(master)), written
    (master.copy_(weight)), or moved to a device other than its own with .to(device). Any other operation,
    arithmetic, comparison, a dtype-only .to(), mixing it with a parameter, raises MixedDeviceError: on a GPU
    it would run on the host (slow) or mix devices (an error). It reports the `meta` device, so code that
    moves tensors "to the master's device" is caught too."""

    ALLOWED = {"numel", "size", "dim", "element_size", "is_pinned", "__len__", "__repr__"}
    PROPERTIES = {"shape", "dtype", "ndim", "requires_grad", "is_cuda", "is_meta", "layout"}

    @staticmethod
    def wrap(master: torch.Tensor) -> HostOnly:
        return torch.Tensor._make_subclass(HostOnly, master.detach())

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        owner = getattr(getattr(func, "__self__", None), "__name__", "")
        plain = [a.as_subclass(torch.Tensor) if isinstance(a, HostOnly) else a for a in args]
        with torch._C.DisableTorchFunctionSubclass():
            if name == "__get__" and owner == "device":
                return HOME
            if (name == "__get__" and owner in cls.PROPERTIES) or name in cls.ALLOWED:
                return func(*plain, **kwargs)
            if func is torch.Tensor.copy_:
                func(*plain, **kwargs)
                return args[0]
            if _moves_to_another_device(func, args, kwargs):
                plain[1:] = [torch.device("cpu") if isinstance(a, torch.Tensor) or (
                             isinstance(a, (str, torch.device)) and torch.device(a) == HOME) else a
                             for a in plain[1:]]
                return func(*plain, **kwargs).clone()  # a transfer: a copy on the parameter's device
        raise MixedDeviceError(f"{owner + '.' if owner else ''}{name or func} computed with a master kept off "
                               "its parameter's device; move it there first")


@pytest.fixture
def masters_off_device(monkeypatch):
    """install(cls): cls.master_of returns HostOnly masters (same values) for the rest of the test."""

    def install(cls) -> None:
        original = cls.master_of
        monkeypatch.setattr(cls, "master_of", lambda self, weight: HostOnly.wrap(original(self, weight)))

    return install
