"""Atomic, strict file writing shared by every command that produces files.

Researchers lost results to half-written and silently overwritten files; every
writer here goes through a temporary file and `os.replace`, refuses to replace
an existing file unless asked, and refuses NaN/Infinity in JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from srdd.errors import SrddError


def check_finite(obj: Any, where: str = "$") -> None:
    """Raise if `obj` holds a non-finite float anywhere, naming the JSON path."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"non-finite value {obj!r} at {where}; JSON output must be finite")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_finite(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            check_finite(v, f"{where}[{i}]")


def check_plain(obj: Any, where: str) -> None:
    """User data (e.g. a YAML file) that a JSON file will hold: strings, finite numbers, bools, null,
    lists and string-keyed mappings only. YAML dates, sets, binary and NaN/Infinity are SrddErrors naming
    the path, raised before anything is written."""
    if obj is None or isinstance(obj, (str, bool, int)):
        return
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise SrddError(f"{where}: {obj} is not a finite number")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise SrddError(f"{where}: key {k!r} is not a string")
            check_plain(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
    else:
        raise SrddError(f"{where}: {type(obj).__name__} value {obj!r} cannot be stored (use a string or number)")


def dumps_json(obj: Any) -> str:
    """Serialise strictly: non-finite floats are a bug in the caller, not data."""
    check_finite(obj)
    return json.dumps(obj, indent=2, allow_nan=False, sort_keys=False) + "\n"


def ensure_writable(path: Path, *, force: bool = False) -> Path:
    """Fail before any work is done if `path` cannot be written."""
    path = Path(path)
    if path.exists() and not force:
        raise SrddError(f"{path} already exists; pass --force to overwrite it")
    if path.exists() and path.is_dir():
        raise SrddError(f"{path} is a directory, expected a file path")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise SrddError(f"cannot write {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise SrddError(f"cannot write {path}: directory {parent} is not writable")
    return path


def _umask() -> int:
    """The process umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_dir_mode() -> int:
    """The mode `mkdir` would give a new directory (0777 less the umask); mkdtemp's is 0700."""
    return 0o777 & ~_umask()


def _stage(path: Path, data: bytes) -> Path:
    """`data` in a temp file beside `path`, on disk (fsync'ed), ready to be renamed over it.

    mkstemp creates the temp file 0600; it gets the mode any new file would
    (0666 less the umask), so outputs are as readable as the user's other files.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~_umask())
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_bytes_atomic(path: Path, data: bytes, *, force: bool = False) -> Path:
    """Write via a temp file in the same directory, then rename over the target."""
    write_all_atomic([(Path(path), data)], force=force)
    return Path(path)


def write_all_atomic(files: Sequence[tuple[Path, bytes]], *, force: bool = False) -> None:
    """Every file or none (a suite, a scan in several formats, a multipliers file with its suite).

    Each file is staged beside its target and fsync'ed; only when all are on disk are they renamed
    into place, and a rename needs no space. A full disk while staging leaves every old file as it
    was and no new file or directory (a missing parent directory is made, and removed on failure).
    """
    made: list[Path] = []
    staged: list[tuple[Path, Path]] = []
    try:
        for path, data in files:
            if not path.parent.exists() and path.parent.parent.is_dir():
                path.parent.mkdir()
                made.append(path.parent)
            staged.append((_stage(ensure_writable(path, force=force), data), path))
        while staged:
            tmp, path = staged[0]
            os.replace(tmp, path)
            staged.pop(0)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def write_text_atomic(path: Path, text: str, *, force: bool = False) -> Path:
    """UTF-8 text through `write_bytes_atomic`."""
    return write_bytes_atomic(path, text.encode("utf-8"), force=force)


def write_json_atomic(path: Path, obj: Any, *, force: bool = False) -> Path:
    """Strict JSON (no NaN/Infinity) written atomically."""
    return write_text_atomic(path, dumps_json(obj), force=force)


def read_json(path: Path, *, what: str = "file") -> Any:
    """Load JSON, turning missing files and syntax errors into user errors."""
    path = Path(path)
    if not path.is_file():
        raise SrddError(f"{what} {path} does not exist or is not a file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SrddError(f"{what} {path} is not valid JSON: {exc}") from exc


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
