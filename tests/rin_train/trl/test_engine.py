"""The TRL engine: rollout-only noise, clean validation, zero-variance groups, per-step records."""

import pytest
import torch

import rin_train.trl.engine as engine
from rin_train.trl.engine import RewardTracker
from rin_train.presets import preset
from rin_train.run_config import load_run_config
from rin_train.train import run_training
from srdd.models import decoder_layers
from tests.rin_train.trl.test_parallel_passes import _run


def _smoke(*sets):
    return load_run_config(None, list(sets), preset=preset("smoke"))


def test_reward_tracker_counts_zero_variance_groups():
    tracker = RewardTracker(num_generations=2, format_score=0.1)
    completions = [[{"role": "assistant", "content": c}] for c in ("#### 3", "#### 3", "4", "#### 4", "x", "y")]
    rewards = tracker(prompts=None, completions=completions, answer=["3", "3", "4", "4", "5", "5"])
    assert rewards == [1.0, 1.0, 0.0, 1.0, 0.0, 0.0]
    stats = tracker.take()
    assert stats["groups"] == 3 and stats["zero_variance_groups"] == 2  # (1,1) and (0,0); (0,1) has signal
    assert stats["rollout_accuracy"] == pytest.approx(3 / 6) and stats["rollout_accuracy_flexible"] == pytest.approx(4 / 6)
    assert tracker.take()["groups"] == 0  # per step


@pytest.mark.parametrize("target", ["rmsnorm", "linear"])
def test_noise_is_on_for_rollouts_only_and_validation_sees_clean_weights(tmp_path, monkeypatch, target):
    seen = {"generate": [], "loss": [], "validate": []}
    clean = {}

    def weight(model):
        """What the layer computes with: the norm's weight; the linear's GEMM weight (its noise is served to the
        quantized-weight buffer, and its parameter must stay clean throughout)."""
        layer = decoder_layers(model)[0]
        if target == "rmsnorm":
            return layer.input_layernorm.weight
        linear = layer.mlp.down_proj.base_layer
        clean.setdefault("param", linear.weight.detach().clone())
        assert torch.equal(linear.weight, clean["param"]), "linear noise must never be written into the parameter"
        return linear.matmul_weight(linear.quant.matmul_torch_dtype(linear.weight))

    def norm_is_clean(model):  # bit for bit the weight the policy was loaded with
        w = weight(model).detach()
        clean.setdefault("w", w.clone())
        return bool(torch.equal(w, clean["w"]))

    generate, loss, evaluate = (engine.GRPOTrainer._generate_single_turn, engine.GRPOTrainer.compute_loss,
                                engine.evaluate)

    def spy_generate(self, *a, **k):
        seen["generate"].append(norm_is_clean(self.model))
        return generate(self, *a, **k)

    def spy_loss(self, model, *a, **k):
        seen["loss"].append(norm_is_clean(model))
        return loss(self, model, *a, **k)

    def spy_evaluate(model, *a, **k):
        seen["validate"].append(norm_is_clean(model))
        return evaluate(model, *a, **k)

    monkeypatch.setattr(engine.GRPOTrainer, "_generate_single_turn", spy_generate)
    monkeypatch.setattr(engine.GRPOTrainer, "compute_loss", spy_loss)
    monkeypatch.setattr(engine, "evaluate", spy_evaluate)
    run = run_training(_smoke(f"noise.targets=[{target}]"), tmp_path / "run")
    assert run.status == "complete"
    assert seen["generate"] == [False] * 3  # perturbed during every rollout...
    assert seen["loss"] and all(seen["loss"])  # ...and clean in the policy-gradient forward/backward
    assert seen["validate"] == [True] * 4  # steps 0, 2, 3 (LoRA separate) and 3 (LoRA merged)


def test_every_step_is_recorded_with_sigma_and_zero_variance_counts(tmp_path):
    run = run_training(_smoke("noise.layer_multipliers={0: 2.0, 1: 0.0}"), tmp_path / "run")
    records = run.logged_steps()
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert [r["step"] for r in records if r["accuracy"] is not None] == [0, 2, 3]
    assert {r["eval_quant"] for r in records if r["accuracy"] is not None} == {"mxfp4/w4a4"}
    assert all(r["eval_quant"] is None for r in records if r["accuracy"] is None)
    for r in records[1:]:
        assert r["sigma_layers"]["0"] / r["sigma"] == pytest.approx(2.0, rel=0.05)  # lesson 1, read back
        assert r["sigma_layers"]["1"] == 0.0
        assert r["groups"] == 2 and 0 <= r["zero_variance_groups"] <= 2
        assert r["step_s"] > 0 and r["wall_s"] > 0
    assert [r["sigma"] for r in records[1:]] == pytest.approx([0.05, 0.05 * 0.2 ** 0.5, 0.01])
    for r in records[1:]:  # nominal and effective sigma for the same layers; the quantizer amplifies small noise
        assert set(r["sigma_layers_effective"]) == set(r["sigma_layers"])
        assert r["sigma_layers_effective"]["1"] == 0.0 and r["sigma_layers_effective"]["0"] > r["sigma_layers"]["0"]
    assert [r.get("eval_lora") for r in records if r["accuracy"] is not None] == ["separate"] * 3
    merged = records[-1]["eval_merged"]
    assert merged["eval_lora"] == "merged" and merged["eval_quant"] == "mxfp4/w4a4"
    assert 0.0 <= merged["accuracy"] <= 1.0 and merged["eval_samples"] == records[-1]["eval_samples"]
    assert all("eval_merged" not in r for r in records[:-1])


def test_rmsnorm_effective_basis_logs_the_rescaled_noise_of_each_rollout(tmp_path):
    """sigma_basis effective on RMSNorm weights: each rollout's first batch sets the nominal sigma, and the
    record is read after the rollout, so metrics.jsonl holds what was written, not the first guess."""
    run = run_training(_smoke("noise.targets=[rmsnorm]", "noise.sigma_basis=effective"), tmp_path / "run")
    records = run.logged_steps()[1:]
    assert run.status == "complete" and len(records) == 3
    for r in records:
        effective, nominal = r["sigma_layers_effective"], r["sigma_layers"]
        assert set(effective) == set(nominal) == {"0", "1", "2"}
        for layer in effective:
            # on a few dozen rollout tokens: close at 0.05, within the rounding regime's jumps at 0.01
            assert effective[layer] == pytest.approx(r["sigma"], rel=0.1 if r["sigma"] > 0.04 else 0.5)
            assert nominal[layer] < 0.5 * r["sigma"]  # the A4 rounding supplies the rest, not the first guess


def test_zero_variance_steps_can_stop_the_run_with_a_reason(tmp_path):
    # the random tiny model never answers correctly: every group has zero variance
    run = run_training(_smoke("grpo.stop_after_zero_variance_steps=2"), tmp_path / "run")
    info = run.info()
    assert info["status"] == "failed" and "2 consecutive steps" in info["reason"]
    assert [r["step"] for r in run.logged_steps()] == [0, 1, 2]


def test_scan_after_is_a_scan_of_the_trained_policy(tmp_path, monkeypatch):
    import json
    import zlib

    # an arbitrary but varied reward, so the random tiny model gets gradients and its LoRA moves
    monkeypatch.setattr(engine, "training_reward", lambda text, answer, fmt=0.0: float(zlib.crc32(text.encode()) % 2))
    run = run_training(_smoke(), tmp_path / "run")
    records = run.logged_steps()
    assert any(r["zero_variance_groups"] < r["groups"] for r in records[1:])
    before = json.loads((tmp_path / "run" / "scan_before.json").read_text())
    after = json.loads((tmp_path / "run" / "scan_after.json").read_text())
    assert before["layers"][0]["block_output"] != after["layers"][0]["block_output"]
    # the LoRA delta is merged for the rescan: the weight statistics see W + BA
    key = "self_attn.q_proj.base_layer"
    assert before["layers"][0]["weights"][key] != after["layers"][0]["weights"][key]


def test_micro_batches_accumulate_into_one_generation_and_update_per_step(tmp_path, monkeypatch):
    calls = []
    generate = engine.GRPOTrainer._generate_single_turn

    def spy_generate(self, *a, **k):
        calls.append(self.state.global_step)
        return generate(self, *a, **k)

    monkeypatch.setattr(engine.GRPOTrainer, "_generate_single_turn", spy_generate)
    cfg = _smoke("grpo.micro_batch_size=2")
    args = engine.grpo_args(cfg, tmp_path / "ckpt")
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2, 2)
    run = run_training(cfg, tmp_path / "run")
    assert run.status == "complete"
    assert calls == [0, 1, 2]  # one rollout of batch_size completions per optimizer step
    records = run.logged_steps()
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert all(r["groups"] == 2 for r in records[1:])  # 4 completions / 2 per group, as without micro-batches


def test_the_final_validations_use_eval_final_samples_and_the_others_eval_samples(tmp_path):
    from rin_train.outcomes import OutcomeLog  # noqa: F401  (the file's writer)
    import json

    run = run_training(_smoke("eval.samples=4", "eval.final_samples=8", "task.test_size=8"), tmp_path / "run")
    records = [r for r in run.logged_steps() if r["accuracy"] is not None]
    *early, final = records
    assert [r["eval_samples"] for r in early] == [4] * len(early) and early
    assert final["eval_samples"] == 8 and final["eval_merged"]["eval_samples"] == 8
    lines = [json.loads(x) for x in (run.path / "eval_outcomes.jsonl").read_text().splitlines()]
    sizes = {(x["step"], x["eval_lora"]): len(x["ids"]) for x in lines}
    assert sizes[(final["step"], "separate")] == sizes[(final["step"], "merged")] == 8
    assert all(n == 4 for (step, _), n in sizes.items() if step != final["step"])
    first_ids = next(x["ids"] for x in lines if x["step"] == 0)
    assert next(x["ids"] for x in lines if x["step"] == final["step"])[:4] == first_ids  # the same problems first


def test_eval_endpoint_only_gives_the_final_test_set_to_the_merged_validation_alone(tmp_path):
    import json

    run = run_training(_smoke("eval.samples=4", "eval.final_samples=8", "task.test_size=8", "eval.endpoint_only=true"),
                       tmp_path / "run")
    final = [r for r in run.logged_steps() if r["accuracy"] is not None][-1]
    assert final["eval_samples"] == 4 and final["eval_merged"]["eval_samples"] == 8
    lines = [json.loads(x) for x in (run.path / "eval_outcomes.jsonl").read_text().splitlines()]
    sizes = {(x["step"], x["eval_lora"]): len(x["ids"]) for x in lines}
    assert sizes == {**{(s, "separate"): 4 for s in (0, 2, 3)}, (3, "merged"): 8}


def test_rollouts_prefill_each_distinct_prompt_once_and_validations_split_nothing_by_default(tmp_path, monkeypatch):
    """TRL passes each prompt num_generations times: the rollout's prefill runs the distinct ones
    (rin_train.shared_prefill); validation prompts are distinct and, without eval.shared_prefix, not split."""
    import rin_train.shared_prefill as sp

    calls = []
    prefill = sp._prefill

    def spy(forward, model, split_prefix, **kwargs):
        rows = sp.Rows.of(*(kwargs[key] for key in sp.PER_ROW if kwargs.get(key) is not None))
        calls.append((model.training, split_prefix, len(rows.inverse), len(rows.unique)))
        return prefill(forward, model, split_prefix, **kwargs)

    monkeypatch.setattr(sp, "_prefill", spy)
    run = run_training(_smoke("noise.targets=[linear]"), tmp_path / "run")  # RMSNorm targets: hooks, no sharing
    assert run.status == "complete"
    assert [c for c in calls if c[0]] == [(True, False, 4, 2)] * 3  # 2 prompts x 2 generations, every step
    assert [c for c in calls if not c[0]] == [(False, False, 8, 8)] * 4  # steps 0, 2, 3 and 3 merged


def test_shared_prompt_runs_every_update_pass_and_matches_trls_forward_on_the_runs_own_batches(tmp_path, monkeypatch):
    """grpo.shared_prompt: every update pass goes through rin_train.trl.shared_prompt, and on each of the run's
    own batches (TRL's layout of prompts and completions) its log-probs are TRL's forward's up to float rounding."""
    calls, gaps = [], []
    logps = engine.shared_prompt_logps
    ours = engine.NoisyGRPOTrainer._get_per_token_logps_and_entropies

    def spy(model, input_ids, *a, **k):
        calls.append(input_ids.shape[0])
        return logps(model, input_ids, *a, **k)

    def against_trl(self, model, input_ids, attention_mask, logits_to_keep, **k):
        out = ours(self, model, input_ids, attention_mask, logits_to_keep, **k)
        with torch.no_grad():
            trl = engine.GRPOTrainer._get_per_token_logps_and_entropies(self, model, input_ids, attention_mask,
                                                                        logits_to_keep, **k)
        gaps.append(max(float((a.detach() - b).abs().max()) for a, b in zip(out[:2], trl[:2])))
        return out

    monkeypatch.setattr(engine, "shared_prompt_logps", spy)
    monkeypatch.setattr(engine.NoisyGRPOTrainer, "_get_per_token_logps_and_entropies", against_trl)
    # micro-batches of 2: two passes a step (RMSNorm noise hooks only the rollout: the update shares prompts too)
    run = run_training(_smoke("noise.targets=[linear]", "grpo.micro_batch_size=2", "grpo.shared_prompt=true"),
                       tmp_path / "run")
    assert run.status == "complete"
    assert calls == [2] * 6  # 3 steps x 2 passes
    assert len(gaps) == 6 and max(gaps) < 1e-4, gaps


def test_an_update_whose_allocations_are_mapped_computes_the_same_bits(tmp_path, monkeypatch, threads):
    thresholds = []
    mapped = engine.mapped_allocations

    def spy(*args):
        thresholds.append(args[0] if args else "update")
        return mapped(*args)

    monkeypatch.setattr(engine, "mapped_allocations", spy)
    threads(2)
    heap, _ = _run(tmp_path, "heap", 2, monkeypatch)
    assert thresholds == []  # off by default: glibc's own threshold
    monkeypatch.setenv("SRDD_MAPPED_UPDATE", "1")
    mapped_run, _ = _run(tmp_path, "mapped", 2, monkeypatch)
    assert thresholds.count("update") == 3 * 4  # every pass of the 3 steps of 4
    assert thresholds.count(engine.DYNAMIC_MMAP_THRESHOLD_MAX) == 3  # each rollout back on the heap
    assert mapped_run == heap


def test_a_rollout_writes_its_noise_on_all_threads_and_samples_with_draws_made_ahead(tmp_path, monkeypatch, threads):
    """With shared prompts the update passes (inside which TRL rolls out) run on one thread each: the noise write
    still gets all of the trainer's threads, decoding keeps one, and the sampling draws are made a call ahead."""
    import rin_train.prefetched_draws as pd
    from rin_train.noise import NoiseInjector

    seen = {"perturb": [], "sample": [], "ahead": []}
    perturb, sample = NoiseInjector.perturb, pd.PrefetchingSampler.__call__

    def perturb_spy(self, *a, **k):
        seen["perturb"].append(torch.get_num_threads())
        return perturb(self, *a, **k)

    def sample_spy(self, *a, **k):
        seen["sample"].append(torch.get_num_threads())
        before = self.prefetched
        out = sample(self, *a, **k)
        seen["ahead"].append(self.prefetched - before)
        return out

    monkeypatch.setattr(NoiseInjector, "perturb", perturb_spy)
    monkeypatch.setattr(pd.PrefetchingSampler, "__call__", sample_spy)
    threads(2)
    _run(tmp_path, "run", 2, monkeypatch)
    assert seen["perturb"] == [2] * 3
    assert seen["sample"] and set(seen["sample"]) == {1}
    assert sum(seen["ahead"]) == len(seen["sample"]) - 3  # every draw but each rollout's first
