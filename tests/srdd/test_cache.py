"""The kernel cache loads only what srdd built: private directory, owner, permissions, recorded sha256."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from srdd import cache
from srdd.formats import native
from srdd.jsonio import sha256_file


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SRDD_CACHE", str(tmp_path / "c"))
    return tmp_path / "c"


def test_xdg_cache_home_is_honoured(tmp_path, monkeypatch):
    monkeypatch.delenv("SRDD_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "xdg" / "srdd"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # invalid per the XDG spec: ignored
    assert cache.cache_root() == Path.home() / ".cache" / "srdd"
    monkeypatch.setenv("SRDD_CACHE", str(tmp_path / "mine"))
    assert cache.cache_root() == tmp_path / "mine"


def test_private_dir_is_0700_and_tightened(fresh_cache):
    path = cache.private_dir("kernels")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    os.chmod(path, 0o775)
    cache.private_dir("kernels")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_a_symlinked_cache_dir_is_not_used(fresh_cache, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    fresh_cache.mkdir()
    (fresh_cache / "kernels").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PermissionError, match="symlink"):
        cache.private_dir("kernels")


@pytest.mark.parametrize("tamper", ["planted", "no_sidecar", "group_writable", "wrong_hash"])
def test_only_the_library_srdd_built_is_loaded(fresh_cache, tamper):
    built = native._build("portable")
    good = built.read_bytes()
    sidecar = built.with_name(built.name + cache.SIDECAR_SUFFIX)
    assert cache.trusted_file(built) and sidecar.read_text().strip() == sha256_file(built)
    if tamper == "planted":  # a library with a constructor, dropped under the predictable name
        built.write_bytes(b"\x7fELF planted")
    elif tamper == "no_sidecar":
        sidecar.unlink()
    elif tamper == "group_writable":
        os.chmod(built, 0o775)
    else:
        sidecar.write_text("0" * 64 + "\n")
    assert not cache.trusted_file(built)
    again = native._build("portable")  # rebuilt over, never loaded as found
    assert again == built and cache.trusted_file(built) and built.read_bytes() == good


def test_every_cache_level_srdd_makes_is_0700(fresh_cache):
    """The root too: mkdir(parents=True) made it (and models/) 0755 (issue 27)."""
    path = cache.private_dir("models")
    assert path == fresh_cache / "models"
    assert {stat.S_IMODE(os.stat(p).st_mode) for p in (fresh_cache, path)} == {0o700}
