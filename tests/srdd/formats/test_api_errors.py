import pytest
import torch

from srdd.formats import fake_quantize, fake_quantize_ste, get_format, list_formats, quant_stats, set_backend


def test_every_documented_format_is_registered():
    assert set(list_formats()) == {"mxfp4", "nvfp4", "mxfp6_e2m3", "mxfp6_e3m2", "mxfp8_e4m3",
                                   "mxfp8_e5m2", "fp8_e4m3", "int4", "bf16", "none"}


def test_unknown_format_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown format 'mxfp3'.*mxfp4.*nvfp4"):
        fake_quantize(torch.ones(32), "mxfp3")


def test_unknown_option_lists_valid_options():
    with pytest.raises(ValueError, match="no option.*per_tensor.*valid options: per_tensor_scale"):
        fake_quantize(torch.ones(32), "nvfp4", per_tensor=True)
    with pytest.raises(ValueError, match="scale_mode must be one of"):
        get_format("mxfp4", scale_mode="ceil")


def test_wrong_option_type():
    with pytest.raises(TypeError, match="per_tensor_scale.*must be bool"):
        fake_quantize(torch.ones(32), "nvfp4", per_tensor_scale=1)
    with pytest.raises(TypeError, match="group_size.*must be int"):
        fake_quantize(torch.ones(32), "int4", group_size=True)


@pytest.mark.parametrize("bad", [torch.ones(32, dtype=torch.int32), torch.ones(32, dtype=torch.float64)])
def test_non_supported_dtypes_are_refused(bad):
    with pytest.raises(TypeError, match="float32, bfloat16 and float16"):
        fake_quantize(bad, "mxfp4")
    with pytest.raises(TypeError):
        quant_stats(bad, "mxfp4")


def test_zero_dim_and_non_tensor_inputs():
    with pytest.raises(ValueError, match="at least 1 dimension"):
        fake_quantize(torch.tensor(1.0), "mxfp4")
    with pytest.raises(TypeError, match="expects a torch.Tensor"):
        fake_quantize([1.0, 2.0], "mxfp4")


def test_mismatched_out():
    with pytest.raises(ValueError, match="out must match x"):
        fake_quantize(torch.ones(2, 32), "mxfp4", out=torch.empty(2, 31))
    with pytest.raises(ValueError, match="out must match x"):
        fake_quantize(torch.ones(2, 32), "mxfp4", out=torch.empty(2, 32, dtype=torch.bfloat16))


def test_empty_tensor_round_trips():
    assert fake_quantize(torch.empty(0, 32), "mxfp4").shape == (0, 32)
    assert quant_stats(torch.empty(0, 32), "mxfp4").numel == 0


def test_options_on_formats_without_options_and_bad_values():
    with pytest.raises(ValueError, match="no option.*scale_mode.*valid options: none"):
        fake_quantize(torch.ones(32), "fp8_e4m3", scale_mode="floor")
    with pytest.raises(ValueError, match="no option.*valid options: scale_mode"):
        fake_quantize(torch.ones(32), "mxfp4", per_tensor_scale=True)
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        fake_quantize(torch.ones(32), "int4", group_size=0)
    with pytest.raises(TypeError, match="scale_mode.*must be str"):
        fake_quantize(torch.ones(32), "mxfp4", scale_mode=1)
    with pytest.raises(TypeError, match="format name must be a str"):
        fake_quantize(torch.ones(32), None)


@pytest.mark.parametrize("entry", [quant_stats, fake_quantize_ste])
def test_every_entry_point_checks_its_input(entry):
    with pytest.raises(ValueError, match="at least 1 dimension"):
        entry(torch.tensor(1.0), "mxfp4")
    with pytest.raises(TypeError, match="float32, bfloat16 and float16"):
        entry(torch.ones(32, dtype=torch.int64), "nvfp4")
    with pytest.raises(ValueError, match="unknown format 'fp4'.*known formats: mxfp4"):
        entry(torch.ones(32), "fp4")
    with pytest.raises(ValueError, match="valid options"):
        entry(torch.ones(32), "int4", group=16)


def test_out_must_be_a_tensor_and_backend_name_is_checked():
    with pytest.raises(TypeError, match="out must be a torch.Tensor"):
        fake_quantize(torch.ones(32), "mxfp4", out=[0.0] * 32)
    with pytest.raises(ValueError, match="unknown fake-quant backend.*auto"):
        set_backend("fast")


def test_one_dim_and_many_dim_inputs_block_along_the_last_dim():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 4, 48, generator=g)
    for fmt in ("mxfp4", "nvfp4", "int4", "fp8_e4m3"):
        q = fake_quantize(x, fmt)
        assert q.shape == x.shape and q.dtype == x.dtype
        assert torch.equal(q, fake_quantize(x.reshape(-1, 48), fmt).reshape(x.shape))
    assert torch.equal(fake_quantize(x[0, 0, 0], "mxfp4"), fake_quantize(x[0, 0, :1], "mxfp4")[0])


def test_fake_quantize_refuses_a_tensor_that_requires_grad():
    x = torch.randn(4, 32, requires_grad=True)
    with pytest.raises(ValueError, match="fake_quantize_ste"):
        fake_quantize(x, "mxfp4")
    # detached, or without grad, it is the same quantizer
    with torch.no_grad():
        assert torch.equal(fake_quantize(x, "mxfp4"), fake_quantize(x.detach(), "mxfp4"))
    fake_quantize_ste(x, "mxfp4").sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_scale_mode_is_case_insensitive_like_format_names():
    x = torch.randn(4, 64)
    assert get_format("MXFP4", scale_mode="RCEIL") == get_format("mxfp4", scale_mode="rceil")
    assert torch.equal(fake_quantize(x, "mxfp4", scale_mode="Rceil"), fake_quantize(x, "mxfp4", scale_mode="rceil"))
