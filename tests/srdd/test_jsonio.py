"""Atomic writes give new files the mode the user's umask asks for, not mkstemp's 0600."""

import os
import stat

import pytest

from srdd.jsonio import new_dir_mode, write_bytes_atomic, write_json_atomic


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_new_files_honour_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    path = write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert stat.S_IMODE(write_bytes_atomic(tmp_path / "a.png", b"\x89PNG").stat().st_mode) == mode
    assert new_dir_mode() == 0o777 & ~mask
    assert os.umask(mask) == mask  # reading the umask left it as it was
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files left
