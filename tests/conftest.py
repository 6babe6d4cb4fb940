"""Fixtures shared across areas: tiny random Llama models saved as HF directories."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def build_tiny_llama(path: Path, *, layers: int = 3, hidden: int = 64, intermediate: int = 128,
                     seed: int = 0) -> Path:
    """A random Llama with a small word-level tokenizer, saved with safetensors (no downloads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from srdd.mathdata import generate_problems

    words = sorted({w for p in generate_problems(400, seed=1) for w in p.question.replace("?", " ?").split()})
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{w: i + 4 for i, w in enumerate(words)}}
    vocab.update({str(d): len(vocab) + d for d in range(10) if str(d) not in vocab})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab) + 16, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "llama")
