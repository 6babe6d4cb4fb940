"""Run a patch function on a module right after it is imported (or at once, if it already is).

verl imports `$VERL_USE_EXTERNAL_MODULES` from inside its own `verl/__init__.py`,
before the submodules we patch exist; importing them there would be circular
(and would drag vLLM into processes that never use it). A finder on
`sys.meta_path` instead wraps the loader of each named module so its patch runs
as soon as the module's code has executed, in whichever process imports it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable
from types import ModuleType

Patch = Callable[[ModuleType], None]

_PATCHES: dict[str, list[Patch]] = {}
_LOCK = threading.Lock()


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, name: str) -> None:
        self._loader = loader
        self._name = name

    def create_module(self, spec: importlib.machinery.ModuleSpec):
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        for patch in _PATCHES.get(self._name, []):
            patch(module)

    def __getattr__(self, attr: str):  # get_source, is_package, ... of the real loader
        return getattr(self._loader, attr)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in _PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _PatchingLoader):
                    spec.loader = _PatchingLoader(spec.loader, fullname)
                return spec
        return None


_FINDER = _Finder()


def when_imported(module_name: str, patch: Patch) -> None:
    """Call `patch(module)` once `module_name` is imported; now, if it already is."""
    with _LOCK:
        _PATCHES.setdefault(module_name, []).append(patch)
        if _FINDER not in sys.meta_path:
            sys.meta_path.insert(0, _FINDER)
    module = sys.modules.get(module_name)
    if module is not None:
        patch(module)


def registered() -> dict[str, int]:
    """Module name -> number of patches waiting for or applied to it."""
    return {name: len(patches) for name, patches in _PATCHES.items()}
