"""Building validated dataclasses from YAML dicts, refusing unknown keys by name."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from srdd.errors import SrddError

T = TypeVar("T")


def from_dict(cls: type[T], data: Any, where: str) -> T:
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise SrddError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise SrddError(f"{where}: unknown key(s) {unknown}; valid keys: {', '.join(sorted(names))}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise SrddError(f"{where}: {exc}") from None
