import pytest
import torch

from srdd.formats import fake_quantize, get_format, list_formats, quant_stats


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
