"""Tiny LoRA policies and TRL-shaped batches for the tests of shared prefill and shared-prompt log-probs."""

from __future__ import annotations

import torch

from srdd.models import load_causal_lm
from srdd.qlinear import LinearQuantConfig, quantize_linears
from srdd.quiet import library_notices_silenced

PREFIX = 10
SUFFIXES = (3, 7, 5)  # different lengths: left padding of 4, 0 and 2 tokens

W4A4_BF16 = LinearQuantConfig("mxfp4", "w4a4", matmul_dtype="bfloat16")  # the default policy's GEMMs
W4A16 = LinearQuantConfig("nvfp4", "w4a16")  # the demo's: fp32 GEMMs
W4A4_PER_TENSOR = LinearQuantConfig("nvfp4", "w4a4")  # activations scaled by the whole tensor's amax


def lora_policy(model_dir, quant: LinearQuantConfig, dropout: float = 0.0):
    from peft import LoraConfig, get_peft_model

    model = load_causal_lm(str(model_dir))[0]
    torch.manual_seed(0)
    with library_notices_silenced():
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                 target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():  # a trained-looking adapter: B is zero at initialisation
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    quantize_linears(model, quant)
    return model


def prompts(vocab: int, copies: int, seed: int = 1, interleaved: bool = False) -> list[list[int]]:
    """Prompts sharing a PREFIX-token start, of different lengths, each `copies` times in a row (TRL's layout)
    or, `interleaved`, the distinct ones `copies` times over."""
    g = torch.Generator().manual_seed(seed)
    start = torch.randint(3, vocab, (PREFIX,), generator=g).tolist()
    distinct = [start + torch.randint(3, vocab, (n,), generator=g).tolist() for n in SUFFIXES]
    return distinct * copies if interleaved else [p for p in distinct for _ in range(copies)]


def left_padded(rows: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask
