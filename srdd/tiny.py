"""Tiny random models with a word-level tokenizer, built locally in seconds.

Smoke runs and fast tests need a real causal LM with a chat-free tokenizer
that never touches a hub; the vocabulary covers the built-in math problems.
`hub_snapshot` lays a model directory out the way the Hugging Face cache does,
so hub ids and bare names resolve offline against a cache built in a temp dir
(tests, and the 7B-shaped benchmark model).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from srdd.quiet import progress_bars_hidden

TINY_LAYERS = 3
"""Decoder depth of the default tiny model (what configs naming model `tiny` are checked against)."""


def build_tiny_tokenizer():
    """A word-level fast tokenizer over the math problems' words, digits 0-999 and a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

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
    return fast


def build_tiny_llama(path: Path, *, layers: int = TINY_LAYERS, hidden: int = 64, intermediate: int = 128,
                     seed: int = 0, architecture: str = "llama") -> Path:
    """A random decoder-only model (`llama`, or `qwen2` with its q/k/v biases) saved as an HF directory."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    config_cls, model_cls = classes[architecture]
    fast = build_tiny_tokenizer()
    torch.manual_seed(seed)
    config = config_cls(vocab_size=len(fast), hidden_size=hidden, intermediate_size=intermediate,
                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=1024, tie_word_embeddings=False,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = model_cls(config)
    path.mkdir(parents=True, exist_ok=True)
    with progress_bars_hidden():  # a model of a few hundred kB needs no progress bar
        model.save_pretrained(path, safe_serialization=True)
    fast.save_pretrained(path)
    return path


def hub_snapshot(hub_cache: Path, repo_id: str, *, commit: str | None = None) -> Path:
    """The (new, empty) snapshot directory of `repo_id` in a Hugging Face cache layout, refs/main pointing at it:
    `<hub_cache>/models--org--name/snapshots/<commit>/`. Fill it with model files."""
    commit = commit or hashlib.sha1(repo_id.encode()).hexdigest()
    repo = Path(hub_cache) / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot
