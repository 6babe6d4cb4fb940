"""Outputs are whole or absent: a full disk (ENOSPC injected at fsync) during `calibrate --suite --force` or a
multi-format `scan` leaves every earlier file as it was; `show --csv` never writes a formula; `-o` never
lands on a file of the suite it writes (issue 27, items 5, 7, 8, 9)."""

from __future__ import annotations

import csv
import errno
import json
import os

import pytest

from srdd.cli import main

from .test_study import _scan as _study_scan


@pytest.fixture
def full_disk(monkeypatch):
    """ENOSPC from the n-th fsync on: the disk fills while the outputs are being written."""
    def arm(n: int) -> None:
        real, calls = os.fsync, []

        def fsync(fd: int) -> None:
            calls.append(fd)
            if len(calls) >= n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    return arm


def _calibrate(tmp_path, *extra):
    return ["calibrate", tmp_path / "scan.json", "-o", tmp_path / "m.yaml", "--suite", tmp_path / "suite",
            "--stages", "2", "--conservative-stages", "2", *extra]


@pytest.mark.parametrize("fail_at", [1, 2, 10, 19])
def test_calibrate_suite_on_a_full_disk_leaves_the_old_suite_whole(tmp_path, refused, full_disk, fail_at):
    (tmp_path / "scan.json").write_text(json.dumps(_study_scan()))
    assert main([str(a) for a in _calibrate(tmp_path)]) == 0
    full_disk(fail_at)  # the suite (18 files) and its multipliers file: 19 fsyncs, the last one fails too
    refused(_calibrate(tmp_path, "--force", "--stages", "3"), tmp_path, "No space left on device", code=1)


def test_calibrate_suite_on_a_full_disk_writes_no_new_suite(tmp_path, refused, full_disk):
    (tmp_path / "scan.json").write_text(json.dumps(_study_scan()))
    full_disk(5)
    refused(_calibrate(tmp_path), tmp_path, "No space left on device", code=1)  # no suite/ dir, no m.yaml


@pytest.mark.parametrize("out", ["suite/E13i-baseline.yaml", "suite/suite.json", "suite/E13j-variable.overrides"])
def test_calibrate_refuses_an_output_that_is_a_suite_file(tmp_path, refused, out):
    (tmp_path / "scan.json").write_text(json.dumps(_study_scan()))
    assert main([str(a) for a in _calibrate(tmp_path)]) == 0
    argv = _calibrate(tmp_path, "--force")
    argv[argv.index("-o") + 1] = tmp_path / out
    refused(argv, tmp_path, "is a file of the suite itself")


def test_a_multi_format_scan_on_a_full_disk_writes_no_file(tmp_path, refused, full_disk, tiny_model_dir):
    full_disk(2)  # the first format's file is staged, the second's fails
    refused(["scan", "--fmt", "mxfp4,nvfp4", "--model", tiny_model_dir, "--samples", "1", "--max-tokens", "8",
             "--out", tmp_path / "scan.json", "--no-progress"], tmp_path, "No space left on device", code=1)


def test_csv_cells_never_start_a_formula(tmp_path):
    """Whatever text reaches a CSV cell (a header from a scan's keys, a value): OWASP's leading quote."""
    from srdd.scan.export import write_csv

    formula = '=HYPERLINK("http://x","y")'
    doc = {"layers": [{"layer": 0, "primary": {formula: "@SUM(1)", "+x": "\tcmd", "sqnr_db": -3.5}}]}
    write_csv(doc, tmp_path / "l.csv")
    header, row = list(csv.reader((tmp_path / "l.csv").open()))
    assert header == ["layer", "'" + formula, "'+x", "sqnr_db"]
    assert row == ["0", "'@SUM(1)", "'\tcmd", "-3.5"]  # a negative number stays a number


@pytest.mark.parametrize("error, expect", [
    (OSError(errno.EFBIG, os.strerror(errno.EFBIG)), os.strerror(errno.EFBIG)),
    (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), os.strerror(errno.EDQUOT)),
    (RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file data/3: "
                  "file write failed"), "file write failed"),
], ids=["EFBIG", "EDQUOT", "torch-save"])
def test_a_full_disk_is_one_error_line_whatever_raised_it(tmp_path, refused, monkeypatch, scan_doc, error, expect):
    import srdd.scan.export

    def full(*args, **kwargs):
        raise error

    (tmp_path / "scan.json").write_text(json.dumps(scan_doc))
    monkeypatch.setattr(srdd.scan.export, "write_text_atomic", full)
    refused(["show", tmp_path / "scan.json", "--csv", tmp_path / "l.csv"], tmp_path, expect, code=1)
