import pytest
import torch

import rin_train.noise
from rin_train.noise import NoiseConfig, NoiseInjector, windows
from srdd.errors import SrddError
from srdd.models import decoder_layers, load_causal_lm
from srdd.qlinear import LinearQuantConfig, quantize_linears


@pytest.fixture
def model(tiny_model_dir):
    return load_causal_lm(str(tiny_model_dir))[0]


def _norm_weights(model, layer):
    return decoder_layers(model)[layer].input_layernorm.weight


def test_layer_multipliers_reach_the_perturbed_weights(model):
    cfg = NoiseConfig(targets=["rmsnorm", "linear"], schedule="constant", sigma_start=0.02, sigma_end=0.02,
                      num_stages=1, layer_multipliers={0: 2.0, 1: 0.0})
    inj = NoiseInjector(model, cfg, seed=1)
    clean0 = _norm_weights(model, 0).detach().clone()
    clean1 = _norm_weights(model, 1).detach().clone()
    q0 = decoder_layers(model)[0].self_attn.q_proj.weight
    clean_q0 = q0.detach().clone()
    with inj.applied(0, 10) as record:
        # read back what is really in the module, independent of the injector's own report
        d0 = (_norm_weights(model, 0).detach() - clean0) / clean0.pow(2).mean().sqrt()
        dq0 = (q0.detach() - clean_q0) / clean_q0.pow(2).mean().sqrt()
        assert torch.equal(_norm_weights(model, 1), clean1)
        assert float(dq0.std()) / 0.04 == pytest.approx(1.0, rel=0.05)  # 4096 samples: ~1 % spread
        assert float(d0.std()) / 0.04 == pytest.approx(1.0, rel=0.35)  # 64 samples: ~9 % spread
        assert record["sigma_layers"]["0"] / 0.04 == pytest.approx(1.0, rel=0.05)
        assert record["sigma_layers"]["1"] == 0.0
        assert record["sigma_layers"]["2"] / 0.02 == pytest.approx(1.0, rel=0.05)
    # the fp32 master the next perturbation starts from is the clean weight, not the noisy one (lesson 3)
    assert torch.equal(next(t.clean for t in inj.targets if t.param is q0), clean_q0)
    assert torch.equal(q0, clean_q0)


def test_tiny_sigma_on_weights_near_one_is_applied_in_fp32(model):
    cfg = NoiseConfig(targets=["rmsnorm"], schedule="constant", sigma_start=1e-4, sigma_end=1e-4, num_stages=1,
                      sigma_mode="absolute")
    inj = NoiseInjector(model, cfg)
    w = _norm_weights(model, 0)
    assert torch.allclose(w, torch.ones_like(w))  # RMSNorm weights start at 1.0
    record = inj.perturb(3, 10)
    assert float((w.detach() - 1).std()) == pytest.approx(1e-4, rel=0.3)
    assert record["sigma_layers"]["0"] == pytest.approx(1e-4, rel=0.3)
    inj.restore()


def test_bf16_rounding_shows_up_in_the_achieved_sigma(model):
    model.to(torch.bfloat16)
    cfg = NoiseConfig(targets=["rmsnorm"], schedule="constant", sigma_start=1e-4, sigma_end=1e-4, num_stages=1,
                      sigma_mode="absolute")
    record = NoiseInjector(model, cfg).perturb(0, 10)
    assert record["sigma_layers"]["0"] < 0.5e-4  # bf16 spacing near 1.0 is 2^-7: most noise rounds away


def test_noise_never_accumulates_and_restore_is_bitwise(model):
    cfg = NoiseConfig(targets=["rmsnorm", "linear"], sigma_start=0.05, sigma_end=0.05, schedule="constant",
                      num_stages=1)
    inj = NoiseInjector(model, cfg, seed=3)
    clean = {n: p.detach().clone() for n, p in model.named_parameters()}
    inj.perturb(1, 10)
    first = {n: p.detach().clone() for n, p in model.named_parameters()}
    inj.perturb(1, 10)  # same step again: restore-then-perturb gives the same weights, not twice the noise
    for n, p in model.named_parameters():
        assert torch.equal(p, first[n]), n
    inj.perturb(2, 10)
    for t in inj.targets:
        assert float((t.param.detach() - t.clean).std()) / t.rms == pytest.approx(0.05, rel=0.35)
    inj.restore()
    for n, p in model.named_parameters():
        assert torch.equal(p, clean[n]), n


@pytest.mark.parametrize("kwargs,message", [
    ({"sigma_start": 0.001, "sigma_end": 0.01}, "sigma_end 0.01 > sigma_start"),
    ({"sigma_start": -0.1}, "must be a finite number >= 0"),
    ({"num_stages": 0}, "num_stages must be an integer >= 1"),
    ({"targets": ["attention"]}, "noise.targets: unknown"),
    ({"sigma_start": 5.0, "sigma_end": 0.1}, "would bury the weights"),
    ({"layer_multipliers": {0: -1.0}}, ">= 0"),
])
def test_bad_noise_settings(kwargs, message):
    with pytest.raises(SrddError, match=message):
        NoiseConfig(**kwargs)


def test_multipliers_for_missing_layers_and_absurd_absolute_sigma(model):
    with pytest.raises(SrddError, match=r"layers \[7\]"):
        NoiseInjector(model, NoiseConfig(layer_multipliers={7: 1.0}))
    with pytest.raises(SrddError, match="would destroy the weight"):
        NoiseInjector(model, NoiseConfig(targets=["linear"], sigma_mode="absolute", sigma_start=0.05))


def test_noise_does_not_depend_on_the_number_of_workers(tiny_model_dir, monkeypatch):
    cfg = NoiseConfig(targets=["rmsnorm", "linear"], schedule="constant", sigma_start=0.02, sigma_end=0.02,
                      num_stages=1)
    results = []
    for workers, window_values in ((1, rin_train.noise.WINDOW_VALUES), (3, 5000)):  # one window; many windows
        monkeypatch.setattr(rin_train.noise, "WINDOW_VALUES", window_values)
        model = load_causal_lm(str(tiny_model_dir))[0]
        record = NoiseInjector(model, cfg, seed=4, workers=workers).perturb(2, 10)
        results.append((record, {n: p.detach().clone() for n, p in model.named_parameters()}))
    (record1, weights1), (record3, weights3) = results
    assert record1 == record3
    assert all(torch.equal(weights1[n], weights3[n]) for n in weights1)


def test_windows_hold_one_job_per_worker_and_more_within_the_budget():
    assert list(windows([5, 1, 1, 10, 1], workers=2, budget=6)) == [range(0, 2), range(2, 4), range(4, 5)]
    assert list(windows([1] * 5, workers=1, budget=100)) == [range(0, 5)]
    assert list(windows([], workers=2, budget=6)) == []


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_masters_kept_off_the_parameters_device_are_only_ever_moved(tiny_model_dir, masters_off_device):
    """With every master on another device (the verl rollout keeps them in pinned CPU memory beside CUDA
    weights), the noise and effective-sigma paths only ever copy a master to its parameter's device: the
    double raises on any other use, as a GPU would on a mixed-device operation. The results are the same."""
    cfg = NoiseConfig(targets=["rmsnorm", "linear"], sigma_basis="effective", sigma_start=0.02, sigma_end=0.002)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    runs = []
    for off_device in (False, True):
        if off_device:
            masters_off_device(NoiseInjector)
        model = load_causal_lm(str(tiny_model_dir))[0]
        quantize_linears(model, LinearQuantConfig("mxfp4", "w4a4"))
        clean = _snapshot(model)
        inj = NoiseInjector(model, cfg, seed=1)
        assert all(type(t.clean).__name__ == ("HostOnly" if off_device else "Tensor") for t in inj.targets)
        record = inj.perturb(2, 10)
        model(input_ids=ids)  # RMSNorm targets: rescaled and measured on the first forward
        effective = inj.effective_layers()
        inj.restore()
        assert all(torch.equal(p, clean[n]) for n, p in model.named_parameters())
        with torch.no_grad():  # a weight sync rewrites one weight in place
            decoder_layers(model)[1].mlp.up_proj.weight.mul_(1.5)
        changed = inj.refresh()
        assert [inj.targets[i].name for i in changed] == ["layers.1.mlp.up_proj"]
        runs.append((record, effective, inj.perturb(3, 10), _snapshot(model)))
    (record, effective, later, weights), (record2, effective2, later2, weights2) = runs
    assert (record, effective, later) == (record2, effective2, later2)
    assert all(torch.equal(weights[n], weights2[n]) for n in weights)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_noise_on_cuda_runs_on_the_device_and_restores_bitwise(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir))[0].to("cuda", torch.bfloat16)
    quantize_linears(model, LinearQuantConfig("mxfp4", "w4a4"))
    clean = _snapshot(model)
    cfg = NoiseConfig(targets=["rmsnorm", "linear"], sigma_basis="effective", sigma_start=0.1, sigma_end=0.1,
                      schedule="constant", num_stages=1)
    inj = NoiseInjector(model, cfg, seed=1)
    record = inj.perturb(1, 3)
    model(input_ids=torch.tensor([[5, 6, 7, 8, 9, 10]], device="cuda"))
    for layer, value in inj.effective_layers().items():
        assert value == pytest.approx(0.1, rel=0.25), layer  # delivered through the device's quantizer
        assert record["sigma_layers"][layer] > 0
    inj.restore()
    assert all(torch.equal(p, clean[n]) for n, p in model.named_parameters())


def test_refresh_asks_for_a_new_injector_when_a_weight_was_reallocated(model):
    inj = NoiseInjector(model, NoiseConfig(targets=["linear"]), seed=0)
    assert inj.refresh() == []  # nothing rewritten: masters kept
    layer = decoder_layers(model)[0].self_attn
    layer.q_proj.weight = torch.nn.Parameter(layer.q_proj.weight.detach().clone())  # a new tensor, same values
    assert inj.refresh() is None


@pytest.mark.parametrize("fmt,mode,matmul,dtype,packed", [
    ("mxfp4", "w4a4", "bfloat16", torch.float32, "0"),  # Q(noisy) in fp32, the GEMM's copy in bf16
    ("nvfp4", "w4a16", None, torch.float32, "0"),
    ("nvfp4", "w4a16", None, torch.float32, "1"),  # Q(noisy) held packed
    ("mxfp4", "w4a4", None, torch.bfloat16, "0"),  # bf16 weights: the draw is cast, Q(clean) is a new tensor
    ("mxfp4", "a4", None, torch.float32, "0"),  # the layer multiplies by the noisy weight itself: kept intact
])
def test_served_weights_measure_their_sigmas_as_quantizing_them_again_would(tiny_model_dir, monkeypatch, fmt, mode,
                                                                           matmul, dtype, packed):
    """A frozen quantized linear's noise goes into its quantized-weight buffer; the nominal and effective sigmas
    are then read with the draw's buffer reused and Q(noisy) taken from the layer. Each must be the float that
    quantizing the noisy and clean weights again (gemm_weight_view) gives, and the layer must multiply by
    Q(noisy)."""
    from rin_train.effective import gemm_weight_view, relative_std
    from srdd.formats.packed import PackedE2M1

    monkeypatch.setenv("SRDD_PACKED_WEIGHTS", packed)
    model = load_causal_lm(str(tiny_model_dir))[0].to(dtype).requires_grad_(False)
    quantize_linears(model, LinearQuantConfig(fmt, mode, matmul_dtype=matmul))
    inj = NoiseInjector(model, NoiseConfig(targets=["linear"], schedule="constant", sigma_start=0.03,
                                           sigma_end=0.03, num_stages=1), seed=5, effective=True)
    assert inj.targets and all(t.served for t in inj.targets)
    inj.perturb(1, 10)
    assert all(isinstance(t.module._wq_cache, PackedE2M1) == (packed == "1") for t in inj.targets)
    inj.perturb(2, 10)
    for index, t in enumerate(inj.targets):
        view = gemm_weight_view(t.module)
        sigma = inj.schedules[t.layer].sigma_at(2, 10) * t.rms
        noisy = inj._draw(2, index).mul_(sigma).add_(t.clean).to(dtype)
        delta = noisy.float() - t.clean.float()
        assert inj._nominal[index] == float(delta.std()) / t.rms, t.name
        assert inj._effective[index] == relative_std(view(noisy).float() - view(t.clean).float(), t.rms), t.name
        operand = t.module.matmul_weight(t.module.quant.matmul_torch_dtype(t.module.weight))
        assert torch.equal(operand, view(noisy).to(operand.dtype)), t.name
    inj.restore()
