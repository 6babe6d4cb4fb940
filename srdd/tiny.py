"""Tiny random models with word-level tokenizers, built locally in seconds.

Smoke runs and fast tests need a real causal LM with a chat-free tokenizer
that never touches a hub. Two models, each a name a run config may give:

- `tiny`: a vocabulary of every word of the built-in math problems and the
  numbers 0..999 (~1300 words): any problem tokenizes, but a random policy
  never writes a correct "#### n", so GRPO on it has no reward to learn from.
- `tiny-echo`: only '####', the digits 0-9 and the chat roles (17 tokens with the
  specials; every other word is <unk>), and a larger init (ECHO_INIT_STD). A
  random policy writes "#### <digit>" often enough that GRPO learns the `echo`
  problems within ~20 steps (rin_train's `learn` preset).

Every command takes the two names as a model (`srdd scan --model tiny-echo`, `model: tiny-echo`
in a run config): `named_tiny_model` builds each once, from seed 0, into the srdd cache, so a name
names one model and a scan of it describes what every seed's run trains.

`hub_snapshot` lays a model directory out the way the Hugging Face cache does,
so hub ids and bare names resolve offline against a cache built in a temp dir
(tests, and the 7B-shaped benchmark model).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch

from srdd.quiet import progress_bars_hidden

TINY_LAYERS = 3
"""Decoder depth of every tiny model (what configs naming one are checked against)."""
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
CHAT_ROLES = ("user:", "assistant:")


def math_words() -> list[str]:
    """The `tiny` vocabulary: the words of the built-in problems and instruction, then the numbers 0..999."""
    from srdd.mathdata import generate_problems

    text = " ".join(p.question for split in ("train", "test") for p in generate_problems(300, seed=1, split=split))
    words = set(text.replace("?", " ? ").replace(".", " . ").split())
    words |= {"####", "Let's", "think", "step", "by", "and", "output", "the", "final", "answer", "after", '"####".',
              *CHAT_ROLES}
    return sorted(words) + [str(d) for d in range(1000)]


def build_tiny_tokenizer(words: Sequence[str] | None = None):
    """A word-level fast tokenizer over SPECIALS + `words` (default: math_words()) with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for w in math_words() if words is None else words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")
    fast.chat_template = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} {% endfor %}"
                          "{% if add_generation_prompt %}assistant: {% endif %}")
    return fast


def build_tiny_llama(path: Path, *, words: Sequence[str] | None = None, layers: int = TINY_LAYERS,
                     hidden: int = 64, intermediate: int = 128, init_std: float = 0.02, seed: int = 0,
                     architecture: str = "llama") -> Path:
    """A random decoder-only model (`llama`, or `qwen2` with its q/k/v biases; weights ~ N(0, init_std))
    whose tokenizer knows SPECIALS + `words`, saved as an HF directory."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    config_cls, model_cls = classes[architecture]
    fast = build_tiny_tokenizer(words)
    torch.manual_seed(seed)
    config = config_cls(vocab_size=len(fast), hidden_size=hidden, intermediate_size=intermediate,
                        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=1024, tie_word_embeddings=False, initializer_range=init_std,
                        pad_token_id=0, bos_token_id=1, eos_token_id=2)
    model = model_cls(config)
    path.mkdir(parents=True, exist_ok=True)
    with progress_bars_hidden():  # a model of a few hundred kB needs no progress bar
        model.save_pretrained(path, safe_serialization=True)
    fast.save_pretrained(path)
    return path


ECHO_WORDS = ("####", *map(str, range(10)), *CHAT_ROLES)
"""The `tiny-echo` vocabulary: what a correct answer to an `echo` problem is made of, and the chat roles."""
ECHO_INIT_STD = 0.1
"""`tiny-echo`'s init std. GRPO trains LoRA adapters, never lm_head, so the output layer's random scale
bounds how far any policy can move from uniform: at Llama's 0.02 and a hidden size of 64 the logit gap
between two tokens stays below ~2, and 20 steps barely lower the entropy."""

TINY_MODELS: dict[str, Callable[..., Path]] = {
    "tiny": build_tiny_llama,
    "tiny-echo": partial(build_tiny_llama, words=ECHO_WORDS, init_std=ECHO_INIT_STD),
}
"""Model names a run config may give instead of a path, and how each is built: f(path, seed=...)."""


def build_tiny_model(name: str, path: Path, *, seed: int = 0) -> Path:
    """The tiny model `name` (a key of TINY_MODELS), saved as an HF directory at `path`."""
    return TINY_MODELS[name](path, seed=seed)


def named_tiny_model(name: str) -> Path:
    """The directory of the model a tiny name names, built once (seed 0) under the srdd cache.

    A name names one model: `srdd scan --model tiny-echo` describes the very weights every seed of a
    `tiny-echo` run starts from, so a scan -> calibrate -> study loop on it is about one model (the
    seed varies the training, not the model). The cache key covers this file and the torch and
    transformers versions, which decide the random init; the build is atomic (temp dir, then rename).
    """
    import transformers

    from srdd.cache import cache_root

    key = hashlib.sha256(Path(__file__).read_bytes() + f"{torch.__version__}:{transformers.__version__}".encode())
    target = cache_root() / "models" / f"{name}-{key.hexdigest()[:16]}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        build_tiny_model(name, tmp)
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():  # not another process building it first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


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
