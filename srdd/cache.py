"""Where srdd keeps what it builds once per machine (converted models, compiled kernels).

The root is `$SRDD_CACHE`, else `$XDG_CACHE_HOME/srdd`, else `~/.cache/srdd`.
Directories srdd makes there are private (0700): a compiled kernel is code this
process loads, so nobody else may be able to plant or swap one. `trusted_file`
is the check before anything from the cache is executed: a regular file (not a
symlink) owned by this user, writable by nobody else, whose bytes match the
sha256 srdd recorded beside it (`<file>.sha256`, written atomically) when it
built the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from srdd.jsonio import sha256_file, write_text_atomic

SIDECAR_SUFFIX = ".sha256"


def cache_root() -> Path:
    """`$SRDD_CACHE`, else `$XDG_CACHE_HOME/srdd`, else ~/.cache/srdd."""
    if os.environ.get("SRDD_CACHE"):
        return Path(os.environ["SRDD_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"  # XDG: relative paths are invalid
    return base / "srdd"


def _owned_private(st: os.stat_result) -> bool:
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def private_dir(*parts: str) -> Path:
    """`cache_root()/parts...`, created 0700 (an existing one of ours is tightened to 0700).

    Raises PermissionError when the directory is a symlink or belongs to another user: its
    contents cannot be trusted, so the caller must not use it.
    """
    root = cache_root()
    root.parent.mkdir(parents=True, exist_ok=True)  # ~/.cache: the user's, left as it is
    path = root
    for part in ("", *parts):  # the root and every level under it: mkdir(parents=True) would make them 0755
        path = path / part if part else path
        path.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(path) if part else os.stat(path)  # the root may be the user's symlink to another disk
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
            raise PermissionError(f"cache directory {path} is a symlink or not owned by this user; not using it")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(path, 0o700)
    return path


def record_hash(path: Path, digest: str) -> None:
    """Write `<path>.sha256` atomically (temp file in the same directory, then rename)."""
    write_text_atomic(path.with_name(path.name + SIDECAR_SUFFIX), digest + "\n", force=True)


def trusted_file(path: Path) -> bool:
    """Whether `path` may be loaded: ours, private, and the bytes srdd recorded when it built it."""
    sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
    try:
        st, side = os.lstat(path), os.lstat(sidecar)
        if not (stat.S_ISREG(st.st_mode) and stat.S_ISREG(side.st_mode)):
            return False
        if not (_owned_private(st) and _owned_private(side) and _owned_private(os.stat(path.parent))):
            return False
        return sidecar.read_text().strip() == sha256_file(path)
    except OSError:
        return False
