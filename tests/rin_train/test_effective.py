"""Effective sigma (what the quantized GEMM sees) against a direct recomputation, and the effective basis."""

import pytest
import torch

from rin_train.effective import EffectiveBasis, rmsnorm_output
from rin_train.noise import NoiseConfig, NoiseInjector
from srdd.formats import fake_quantize
from srdd.models import decoder_layers, load_causal_lm
from srdd.qlinear import LinearQuantConfig, quantize_linears


@pytest.fixture
def model(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir))[0]
    quantize_linears(model, LinearQuantConfig("mxfp4", "w4a4"))
    return model


def _constant(sigma: float, **kw) -> NoiseConfig:
    return NoiseConfig(schedule="constant", sigma_start=sigma, sigma_end=sigma, num_stages=1, **kw)


def test_linear_effective_sigma_equals_a_direct_recomputation(model):
    cleans = {name: m.weight.detach().clone() for name, m in model.named_modules() if hasattr(m, "quant")}
    inj = NoiseInjector(model, _constant(0.0005), seed=3, effective=True)
    record = inj.perturb(0, 10)
    effective = inj.effective_layers()
    for index, layer in enumerate(decoder_layers(model)):
        values = []
        for name, module in layer.named_modules():
            if not hasattr(module, "quant"):
                continue
            w0 = cleans[f"model.layers.{index}.{name}"]
            seen = fake_quantize(module.weight.detach(), "mxfp4") - fake_quantize(w0, "mxfp4")
            values.append(float(seen.double().std()) / float(w0.double().pow(2).mean().sqrt()))
        assert effective[str(index)] == pytest.approx(sum(values) / len(values), rel=1e-6)  # rms in fp32 there
        # below the MXFP4 step the noise the GEMM sees is many times the noise written (DESIGN §3)
        assert effective[str(index)] > 5 * record["sigma_layers"][str(index)]
    inj.restore()
    assert inj.effective_layers() is not None  # the last measurement stays readable after the restore


def test_effective_equals_nominal_where_nothing_is_quantized(tiny_model_dir):
    plain = load_causal_lm(str(tiny_model_dir))[0]
    inj = NoiseInjector(plain, _constant(0.01), seed=0, effective=True)
    record = inj.perturb(0, 10)
    assert inj.effective_layers() == pytest.approx(record["sigma_layers"], rel=1e-6)


def test_rmsnorm_effective_sigma_is_measured_on_the_first_rollout_batch(model):
    layer = decoder_layers(model)[1]
    norm = layer.post_attention_layernorm
    clean = norm.weight.detach().clone()
    captured = {}

    def capture(module, args, out) -> None:  # returns None: a hook's return value would replace the output
        captured.setdefault("io", (args[0].detach(), out.detach()))

    handle = norm.register_forward_hook(capture)
    inj = NoiseInjector(model, _constant(0.01, targets=["rmsnorm"]), seed=1, effective=True)
    inj.perturb(0, 10)
    assert inj.effective_layers() is None  # norms are measured when they run, not when they are written
    with torch.no_grad():
        model(torch.randint(4, 100, (2, 12)))
    handle.remove()
    hidden, noisy_out = captured["io"]
    reference = rmsnorm_output(clean, hidden, norm.variance_epsilon)
    seen = fake_quantize(noisy_out, "mxfp4") - fake_quantize(reference, "mxfp4")
    expected_post = float(seen.double().std()) / float(reference.double().pow(2).mean().sqrt())
    values = inj._effective  # per target: the layer averages its input and post-attention norms
    post = next(i for i, t in enumerate(inj.targets) if t.module is norm)
    assert values[post] == pytest.approx(expected_post, rel=1e-6)  # std of fp32 values there
    assert set(inj.effective_layers()) == {"0", "1", "2"}
    inj.restore()
    with torch.no_grad():  # no hook left behind: a clean forward measures nothing more
        model(torch.randint(4, 100, (2, 12)))
    assert values is inj._effective and len(values) == len(inj.targets)


def test_effective_basis_delivers_the_requested_effective_sigma(model):
    cfg = _constant(0.02, sigma_basis="effective")
    inj = NoiseInjector(model, cfg, seed=5)
    assert isinstance(inj.basis, EffectiveBasis)
    for step, want in ((0, 0.02),):
        record = inj.perturb(step, 10)
        got = inj.effective_layers()
        for layer, value in got.items():
            assert value == pytest.approx(want, rel=0.2)
            assert record["sigma_layers"][layer] < want  # the nominal sigma it took was smaller
    inj.restore()


def test_an_unreachable_effective_tail_is_said_once(model, capsys):
    cfg = NoiseConfig(schedule="exponential", sigma_start=0.02, sigma_end=1e-9, num_stages=3, sigma_basis="effective")
    inj = NoiseInjector(model, cfg, seed=5)
    err = capsys.readouterr().err
    assert err.count("cannot be honoured") == 1 and "1e-09" in err
    assert any(inj.basis.floor(i) > 1e-9 for i in range(len(inj.targets)))
    NoiseInjector(model, _constant(0.02, sigma_basis="effective"), seed=5)
    assert "cannot be honoured" not in capsys.readouterr().err


def test_rmsnorm_effective_basis_rescales_the_draw_on_the_first_rollout_batch(model):
    """Asked for effective 0.05 on RMSNorm weights under A4, the first forward of each noise version finds the
    nominal sigma giving it on that batch, rewrites the weight, and itself already runs with the rewritten one."""
    inj = NoiseInjector(model, _constant(0.05, targets=["rmsnorm"], sigma_basis="effective"), seed=2)
    cleans = [t.clean.clone() for t in inj.targets]
    ids = torch.randint(4, 100, (8, 32), generator=torch.Generator().manual_seed(0))
    for step in (0, 1):
        record = inj.perturb(step, 10)
        assert inj.effective_layers() is None and record["sigma_layers"] == inj.nominal_layers()
        with torch.no_grad():
            first = model(ids).logits
            again = model(ids).logits  # no hook left: the weights as rewritten
        assert torch.equal(first, again)  # the first forward already used the rescaled weights
        for layer, value in inj.effective_layers().items():
            assert value == pytest.approx(0.05, rel=0.02), layer  # 5.6 % off without REFINE_ROUNDS
        nominal = inj.nominal_layers()
        assert nominal != record["sigma_layers"]  # rescaled from the value first written
        for index, t in enumerate(inj.targets):
            written = float((t.param.detach() - cleans[index]).std()) / t.rms
            assert inj._nominal[index] == pytest.approx(written, rel=1e-6)
        assert all(0 < v < 0.05 for v in nominal.values())  # A4 rounding adds noise: less had to be written
    inj.restore()
    assert all(torch.equal(t.param.detach(), c) for t, c in zip(inj.targets, cleans))


def test_rmsnorm_effective_basis_is_refused_where_norms_cannot_be_read(model):
    from srdd.errors import SrddError

    class Unreadable(NoiseInjector):
        norm_measurable = False

    with pytest.raises(SrddError, match="cannot read"):
        Unreadable(model, _constant(0.05, targets=["rmsnorm"], sigma_basis="effective"), seed=0)
    Unreadable(model, _constant(0.05, targets=["linear"], sigma_basis="effective"), seed=0)  # linears are fine


def test_effective_basis_needs_relative_sigma():
    from srdd.errors import SrddError

    with pytest.raises(SrddError, match="sigma_basis: effective needs sigma_mode relative"):
        _constant(0.02, sigma_basis="effective", targets=["rmsnorm"], sigma_mode="absolute")
    _constant(0.02, sigma_basis="effective", targets=["rmsnorm", "linear"])
    with pytest.raises(SrddError, match="sigma_basis must be"):
        _constant(0.02, sigma_basis="typo")
