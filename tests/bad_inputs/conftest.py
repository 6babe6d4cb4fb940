"""The bad-input battery: every refusal is one `srdd CMD: error: ...` line, exit 2, and touches nothing.

`refused(argv, root)` runs the real entry point (srdd.cli.main in-process, or the `srdd`
executable with `subprocess=True`), then checks: exit code 2 (`code=1`: a full disk during the work),
stderr exactly one line `srdd CMD: error: ...` holding `expect`, no traceback, and the tree under `root`
(paths, bytes, symlink targets, modes) identical before and after: nothing appeared, changed or vanished.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from srdd.cli import main


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root: (kind, content or link target, mode)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if path.is_symlink():
                out[str(path.relative_to(root))] = ("link", os.readlink(path), st.st_mode)
            elif path.is_dir():
                out[str(path.relative_to(root))] = ("dir", None, st.st_mode)
            else:
                out[str(path.relative_to(root))] = ("file", path.read_bytes(), st.st_mode)
    return out


@pytest.fixture
def refused(capsys):
    def check(argv: list, root: Path, expect: str, *, subprocess_run: bool = False, code: int = 2) -> str:
        argv = [str(a) for a in argv]
        before = snapshot(root)
        if subprocess_run:
            done = subprocess.run(["srdd", *argv], capture_output=True, text=True, timeout=300, cwd=root)
            rc, err = done.returncode, done.stderr
        else:
            rc = main(argv)
            err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert rc == code, err[-2000:]
        assert "Traceback" not in err
        assert len(lines) == 1 and lines[0].startswith(f"srdd {argv[0]}: error: "), err[-2000:]
        assert expect in lines[0], lines[0]
        assert snapshot(root) == before, "files appeared, changed or vanished"
        return lines[0]
    return check


@pytest.fixture(scope="session")
def scan_doc(tmp_path_factory, tiny_model_dir) -> dict:
    """A real srdd.scan/v1 document of the tiny model (what the malformed variants start from)."""
    out = tmp_path_factory.mktemp("scan") / "scan.json"
    assert main(["scan", "--fmt", "mxfp4", "--model", str(tiny_model_dir), "--samples", "2", "--max-tokens", "16",
                 "--out", str(out), "--no-progress"]) == 0
    return json.loads(out.read_text())
