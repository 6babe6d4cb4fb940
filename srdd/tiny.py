"""A tiny random Llama with a word-level tokenizer, built locally in seconds.

Smoke runs and fast tests need a real causal LM with a chat-free tokenizer
that never touches a hub; the vocabulary covers the built-in math problems.
"""

from __future__ import annotations

from pathlib import Path

import torch

from srdd.quiet import progress_bars_hidden

TINY_LAYERS = 3
"""Decoder depth of the default tiny model (what configs naming model `tiny` are checked against)."""


def build_tiny_llama(path: Path, *, layers: int = TINY_LAYERS, hidden: int = 64, intermediate: int = 128,
                     seed: int = 0) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from srdd.mathdata import generate_problems

    text = " ".join(p.question for split in ("train", "test") for p in generate_problems(300, seed=1, split=split))
    words = sorted(set(text.replace("?", " ? ").replace(".", " . ").split()) | {"####", "Let's", "think", "step",
                                                                               "by", "and", "output", "the",
                                                                               "final", "answer", "after",
                                                                               '"####".', "user:", "assistant:"})
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for w in words + [str(d) for d in range(1000)]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
    fast.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}"
                          "{% if add_generation_prompt %}assistant: {% endif %}")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=False,
                         pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    with progress_bars_hidden():  # a model of a few hundred kB needs no progress bar
        model.save_pretrained(path, safe_serialization=True)
    fast.save_pretrained(path)
    return path
