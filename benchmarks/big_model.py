"""A Qwen2.5-7B-shaped model with random bf16 weights, built once, laid out as a Hugging Face hub cache.

    python benchmarks/big_model.py [--cache ~/.cache/srdd/bench]

The real checkpoint cannot be downloaded here, and its values do not matter
for memory and time: what matters is the shape (28 layers, hidden 3584,
intermediate 18944, 28 query / 4 key-value heads, vocab 152064, 7.6 B
parameters, ~15 GB of bf16 safetensors shards). It is written one shard at a
time (never the whole model in memory) into
`<cache>/hub/models--Qwen--Qwen2.5-7B/snapshots/<commit>/`, with `refs/main`
written last, so `HF_HUB_CACHE=<cache>/hub srdd scan --model Qwen2.5-7B`
resolves it exactly as it would the real one. The tokenizer is srdd's tiny
word-level one (ids fit in the 152064-row embedding).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import torch

from srdd.cache import cache_root
from srdd.tiny import build_tiny_tokenizer

REPO_ID = "Qwen/Qwen2.5-7B"
COMMIT = "0" * 32 + "bench7b1"  # a fixed 40-character fake commit hash
LAYERS_PER_SHARD = 4
INIT_STD = 0.02


def default_cache() -> Path:
    return cache_root() / "bench"


def qwen7b_config():
    from transformers import Qwen2Config

    tok = build_tiny_tokenizer()
    return Qwen2Config(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
                       rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
                       architectures=["Qwen2ForCausalLM"], dtype="bfloat16", pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)


def _shard_of(name: str) -> int:
    """Shard 0 holds embeddings, final norm and head; shard k >= 1 holds layers 4(k-1) .. 4k-1."""
    match = re.match(r"model\.layers\.(\d+)\.", name)
    return 0 if match is None else 1 + int(match.group(1)) // LAYERS_PER_SHARD


def _random(shape: torch.Size, name: str, generator: torch.Generator) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.bfloat16)
    return (torch.randn(shape, generator=generator) * INIT_STD).to(torch.bfloat16)


def build(cache: Path, *, seed: int = 0) -> Path:
    """The snapshot directory of the 7B-shaped model, written unless a complete one is there already."""
    from safetensors.torch import save_file
    from transformers import Qwen2ForCausalLM

    repo = cache / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    if (repo / "refs" / "main").is_file():
        return snapshot
    config = qwen7b_config()
    with torch.device("meta"):
        shapes = {n: p.shape for n, p in Qwen2ForCausalLM(config).state_dict().items()}
    staging = cache / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shards = sorted({_shard_of(n) for n in shapes})
    files = {k: f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i, k in enumerate(shards)}
    generator = torch.Generator().manual_seed(seed)
    total = 0
    for k in shards:
        tensors = {n: _random(s, n, generator) for n, s in shapes.items() if _shard_of(n) == k}
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        save_file(tensors, staging / files[k], metadata={"format": "pt"})
        print(f"wrote {files[k]} ({sum(t.numel() for t in tensors.values()) / 1e9:.2f} B parameters)", flush=True)
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": {n: files[_shard_of(n)] for n in sorted(shapes)}}
    (staging / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    config.save_pretrained(staging)
    build_tiny_tokenizer().save_pretrained(staging)
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(snapshot, ignore_errors=True)
    staging.rename(snapshot)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)  # last: a cache with refs/main is complete
    return snapshot


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=default_cache())
    print(build(p.parse_args().cache))


if __name__ == "__main__":
    main()
