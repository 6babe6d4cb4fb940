"""Bit-exact fake quantization (quantize -> dequantize) for MX, NVFP4, FP8 and INT4 formats.

    from srdd.formats import fake_quantize, quant_stats
    y = fake_quantize(x, "mxfp4")                    # same shape/dtype as x
    s = quant_stats(x, "nvfp4", per_tensor_scale=False).metrics()

Numerics follow DESIGN.md §2 exactly; see `list_formats()` for names and
`get_format(name, **options)` for the validated config of each.
"""

from srdd.formats.backend import get_backend, set_backend
from srdd.formats.elements import ElementSpec
from srdd.formats.quantize import fake_quantize, fake_quantize_ste, quant_stats
from srdd.formats.registry import FORMATS, get_format, list_formats
from srdd.formats.specs import ScaleMode
from srdd.formats.stats import SQNR_CAP_DB, QuantStats

__all__ = [
    "FORMATS",
    "SQNR_CAP_DB",
    "ElementSpec",
    "QuantStats",
    "ScaleMode",
    "fake_quantize",
    "fake_quantize_ste",
    "get_backend",
    "get_format",
    "list_formats",
    "quant_stats",
    "set_backend",
]
