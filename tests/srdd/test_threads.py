"""`srdd` makes torch's threads wait passively, before any subcommand can load torch; a user's choice stands."""

import os

import pytest

import srdd.cli
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
