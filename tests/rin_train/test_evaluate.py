"""Validation's batches run side by side, one thread each: the same greedy tokens and outcomes as one after another."""

import threading

import torch

from rin_train.evaluate import evaluate
from rin_train.run_config import TaskConfig
from rin_train.tasks import load_task
from srdd.models import load_causal_lm
from srdd.threads import WAIT_POLICY, torch_threads


def test_batches_side_by_side_generate_what_one_thread_does_in_turn(tiny_model_dir, monkeypatch):
    model, tokenizer = load_causal_lm(str(tiny_model_dir))[:2]
    _, test = load_task(TaskConfig(train_size=8, test_size=12), seed=0)
    outputs: list[tuple[int, int, list[list[int]]]] = []  # (thread, torch threads, tokens) per generate call
    generate = model.generate

    def recording(*args, **kwargs):
        out = generate(*args, **kwargs)
        outputs.append((threading.get_ident(), torch.get_num_threads(), out.tolist()))
        return out

    model.generate = recording
    monkeypatch.setenv(WAIT_POLICY, "PASSIVE")
    runs = {}
    for threads in (1, 2):
        outputs.clear()
        with torch_threads(threads):
            runs[threads] = evaluate(model, tokenizer, test, max_new_tokens=6, quant_label="none", batch_size=4)
        runs[threads]["calls"] = sorted(outputs, key=lambda call: call[2])
    one, two = runs[1], runs[2]
    assert one["per_problem"] == two["per_problem"] and one["accuracy"] == two["accuracy"]
    assert [tokens for *_, tokens in one["calls"]] == [tokens for *_, tokens in two["calls"]]
    assert len(one["calls"]) == 3 and {t for t, *_ in one["calls"]} == {threading.get_ident()}  # in turn, here
    assert len({t for t, *_ in two["calls"]} - {threading.get_ident()}) == 2  # two workers took the 3 batches
    assert {n for _, n, _ in two["calls"]} == {1}  # each on one thread
