"""`srdd` makes torch's threads wait passively, before any subcommand can load torch; a user's choice stands."""

import os

import pytest

import srdd.cli
from srdd.errors import SrddError
from srdd.threads import WAIT_POLICY, passive_openmp_wait


def test_the_policy_is_passive_unless_the_user_chose_one(monkeypatch):
    monkeypatch.delenv(WAIT_POLICY, raising=False)
    passive_openmp_wait()
    assert os.environ[WAIT_POLICY] == "PASSIVE"
    monkeypatch.setenv(WAIT_POLICY, "ACTIVE")
    passive_openmp_wait()
    assert os.environ[WAIT_POLICY] == "ACTIVE"


def test_the_srdd_command_sets_it_before_building_its_subcommands(monkeypatch):
    """Building the parser imports the subcommand modules, and with them torch, whose OpenMP reads the
    variable once, at load: it must be set by then."""
    monkeypatch.delenv(WAIT_POLICY, raising=False)
    seen = []

    def parser():
        seen.append(os.environ.get(WAIT_POLICY))
        raise SystemExit(0)

    monkeypatch.setattr(srdd.cli, "build_parser", parser)
    with pytest.raises(SystemExit):
        srdd.cli.main(["--help"])
    assert seen == ["PASSIVE"]


def test_few_row_forwards_run_on_one_thread_when_threads_wait_passively(monkeypatch):
    import torch

    from srdd.threads import small_gemm_threads, torch_threads

    before = torch.get_num_threads()
    with torch_threads(2):
        monkeypatch.setenv(WAIT_POLICY, "PASSIVE")
        assert small_gemm_threads() == 1
        monkeypatch.setenv(WAIT_POLICY, "ACTIVE")
        assert small_gemm_threads() == 2
        monkeypatch.delenv(WAIT_POLICY)  # OpenMP's default spins
        assert small_gemm_threads() == 2
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_update_passes_run_side_by_side_one_per_thread_where_a_pass_runs_on_one(monkeypatch):
    from srdd.threads import PASS_WORKERS, torch_threads, update_workers

    monkeypatch.delenv(PASS_WORKERS, raising=False)
    with torch_threads(2):
        monkeypatch.setenv(WAIT_POLICY, "PASSIVE")
        assert update_workers() == 2
        monkeypatch.setenv(PASS_WORKERS, "1")  # a user short of memory: one pass's activations at a time
        assert update_workers() == 1
        monkeypatch.setenv(PASS_WORKERS, "8")  # a cap, not a count: never more than the threads
        assert update_workers() == 2
        for bad in ("0", "two", "-1"):
            monkeypatch.setenv(PASS_WORKERS, bad)
            with pytest.raises(SrddError, match=f"{PASS_WORKERS} must be a positive whole number, got '{bad}'"):
                update_workers()
        monkeypatch.setenv(WAIT_POLICY, "ACTIVE")  # passes use every thread already
        with pytest.raises(SrddError, match=PASS_WORKERS):  # refused all the same: the next run may wait passively
            update_workers()
        monkeypatch.setenv(PASS_WORKERS, "2")
        assert update_workers() == 1
