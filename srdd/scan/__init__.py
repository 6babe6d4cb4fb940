"""`srdd scan`: per-layer quantization error of a model's activations and weights, in one pass."""

from srdd.scan.runner import ScanConfig, scan_model

__all__ = ["ScanConfig", "scan_model"]
