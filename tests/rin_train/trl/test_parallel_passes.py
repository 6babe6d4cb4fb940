"""Update passes side by side (rin_train.trl.parallel_passes): a run computes the same bits as one pass at a time,
the passes did run ahead, and a Trainer that scales the loss otherwise than reproduced is refused, not trusted."""

import pytest
import torch

import rin_train.trl.parallel_passes as pp
from rin_train.presets import preset
from rin_train.run_config import load_run_config
from rin_train.train import run_training

TIMINGS = ("step_s", "wall_s")
# the learn preset, which learns from its first steps (a run whose rewards never vary has zero gradients, and any
# handling of them passes); micro-batches of 16 of its 64 completions: four passes a step
SETS = ["grpo.steps=3", "eval.every=3", "grpo.save_every=3", "eval.samples=8", "grpo.micro_batch_size=16",
        "grpo.shared_prompt=true"]


def _run(tmp_path, name: str, workers: int, monkeypatch) -> tuple[list[dict], int]:
    """A short learn run's records without timings, and how many of its passes ran ahead."""
    monkeypatch.setenv("SRDD_PASS_WORKERS", str(workers))
    replayed = []
    replay = pp.ParallelPasses.replay

    def counted(self, index, params):
        out = replay(self, index, params)
        replayed.append(out is not None)
        return out

    monkeypatch.setattr(pp.ParallelPasses, "replay", counted)
    run = run_training(load_run_config(None, SETS, preset=preset("learn"), name=name), tmp_path / name)
    assert run.status == "complete"
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in run.logged_steps()], sum(replayed)


@pytest.mark.parametrize("workers", [2, 3])
def test_a_run_with_passes_side_by_side_computes_the_bits_of_one_pass_at_a_time(tmp_path, monkeypatch, threads,
                                                                               workers):
    threads(workers)
    alone, ahead_alone = _run(tmp_path, "alone", 1, monkeypatch)
    side, ahead = _run(tmp_path, "side", workers, monkeypatch)
    assert ahead_alone == 0
    # 3 steps of 4 passes: groups of 2 run 2 ahead a step, of 3 (then 1) also 2
    assert ahead == 3 * 2
    assert side == alone


def test_a_trainer_that_scales_the_loss_otherwise_is_refused(tmp_path, monkeypatch, threads):
    threads(2)
    monkeypatch.setattr(pp.ParallelPasses, "grad_at_loss",
                        lambda self, loss, n: torch.full_like(loss, 0.125))  # the Trainer passes 1.0 on (TRL divides by the passes itself)
    with pytest.raises(RuntimeError, match="scaled a pass.s loss by 1.0,"):
        _run(tmp_path, "refused", 2, monkeypatch)


def test_on_one_thread_passes_run_one_at_a_time(tmp_path, monkeypatch, threads):
    threads(1)
    assert _run(tmp_path, "one-thread", 2, monkeypatch)[1] == 0


def test_every_forward_and_every_pass_hands_its_freed_memory_back(tmp_path, monkeypatch, threads):
    """The holes a pass's forward and backward leave between live activations are trimmed where each ends, in the
    leader (after its forward in compute_loss, after the whole pass in training_step) and in a worker running
    ahead (after its forward, after its gradients): a demo run's update peak held about 0.8 GB of them."""
    import sys

    import rin_train.trl.engine as engine

    threads(2)
    where: list[str] = []
    release = pp.release_free_memory

    def counted() -> bool:
        where.append(sys._getframe(1).f_code.co_name)
        return release()

    monkeypatch.setattr(engine, "release_free_memory", counted)
    monkeypatch.setattr(pp, "release_free_memory", counted)
    assert _run(tmp_path, "trimmed", 2, monkeypatch)[1] == 3 * 2
    # 3 steps of 4 passes, 2 of them a step run ahead: their forwards and backwards in the worker, the other
    # 2 passes' forwards in compute_loss, and every pass's end in training_step
    assert where.count("_compute") == 3 * 2 * 2
    assert where.count("compute_loss") == 3 * 2
    assert where.count("training_step") == 3 * 4
