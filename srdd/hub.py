"""Hub ids and bare model names -> a snapshot directory in the user's Hugging Face cache.

A hub id (`Qwen/Qwen2.5-7B`) is fetched with huggingface_hub: online it
downloads what srdd reads (safetensors weights, config, tokenizer) into the
user's cache with the hub's own progress bar; offline (`HF_HUB_OFFLINE=1`, or
no network) the cache answers. A bare name (`Qwen2.5-7B`) is matched against
the models in the cache, then against the short table of the families the
study uses. The hub's settings (HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE) are read
through `huggingface_hub.constants` and never written: a library that flips a
user's hub to offline surprises everyone else in the process.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from srdd.errors import SrddError

DOWNLOAD_PATTERNS: tuple[str, ...] = ("*.safetensors", "*.json", "*.txt", "*.model", "*.tiktoken")
"""What is downloaded: weights as safetensors, config and generation config, tokenizer files."""

_QWEN_SIZES = ("0.5B", "1.5B", "3B", "7B", "14B", "32B", "72B")
_LLAMA_NAMES = ("Meta-Llama-3-8B", "Meta-Llama-3-70B", "Llama-3.1-8B", "Llama-3.1-70B", "Llama-3.1-405B",
                "Llama-3.2-1B", "Llama-3.2-3B")
_SMOLLM2_SIZES = ("135M", "360M", "1.7B")

FAMILIES: dict[str, str] = {
    name.lower(): f"{org}/{name}"
    for org, bases in (("Qwen", [f"Qwen2.5-{s}" for s in _QWEN_SIZES]),
                       ("meta-llama", list(_LLAMA_NAMES)),
                       ("HuggingFaceTB", [f"SmolLM2-{s}" for s in _SMOLLM2_SIZES]))
    for base in bases
    for name in (base, f"{base}-Instruct")
} | {"llama-3.3-70b-instruct": "meta-llama/Llama-3.3-70B-Instruct"}
"""Bare names a user may type without the organisation, lower-cased -> hub id."""

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_FAMILY_HINT = "Qwen2.5-{0.5B..72B}[-Instruct], Llama-3.x, SmolLM2-{135M,360M,1.7B}[-Instruct]"


@dataclass(frozen=True)
class HubSnapshot:
    repo_id: str
    revision: str
    """The commit hash of the snapshot loaded (never a branch name)."""
    path: Path


def is_repo_id(spec: str) -> bool:
    return bool(_REPO_ID.match(spec))


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def cached_repo_ids(name: str, cache: Path) -> list[str]:
    """Hub ids of the cached models whose name (the part after the organisation) is `name`, any case."""
    if not cache.is_dir():
        return []
    found = []
    for entry in sorted(cache.glob("models--*--*")):
        org, _, repo = entry.name.removeprefix("models--").partition("--")
        if repo.lower() == name.lower() and (entry / "snapshots").is_dir():
            found.append(f"{org}/{repo}")
    return found


def repo_for_name(name: str) -> str:
    """The hub id a bare name means: a model of that name in the cache, else the family table."""
    cache = hub_cache()
    cached = cached_repo_ids(name, cache)
    known = FAMILIES.get(name.lower())
    if len(cached) == 1 or (cached and known in cached):
        return cached[0] if len(cached) == 1 else known
    if cached:
        raise SrddError(f"model {name!r} is ambiguous: the Hugging Face cache {cache} holds {', '.join(cached)}; "
                        "give the full hub id")
    if known is not None:
        return known
    raise SrddError(f"model {name!r} not found: no file or directory of that name, no model named {name!r} in the "
                    f"Hugging Face cache {cache}, and not a known family name ({_FAMILY_HINT}); give a local model "
                    "directory, a .gguf file, 'smollm2', or a hub id such as Qwen/Qwen2.5-7B")


REVISION = re.compile(r"(?!-)(?!.*\.\.)[A-Za-z0-9._/-]{1,128}")
"""A branch, tag, commit hash or `refs/pr/N`: what the hub accepts, and nothing a shell would interpret."""


def check_revision(revision: str) -> str:
    if not REVISION.fullmatch(revision):
        raise SrddError(f"--revision {revision[:80]!r}: expected a branch, tag or commit (letters, digits and ._/-, "
                        "1-128 characters)")
    return revision


def fetch_command(repo_id: str, revision: str | None) -> str:
    """The command that fetches a model, safe to paste into a shell (every value quoted)."""
    words = ["hf", "download", repo_id, *(w for p in DOWNLOAD_PATTERNS[:3] for w in ("--include", p))]
    return shlex.join(words + (["--revision", revision] if revision else []))


def fetch(spec: str, repo_id: str, revision: str | None = None) -> HubSnapshot:
    """The snapshot of `repo_id` at `revision` (default: main), downloaded first when online and missing."""
    from huggingface_hub import snapshot_download

    cache, offline = hub_cache(), hub_offline()
    try:
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=offline,
                                      allow_patterns=list(DOWNLOAD_PATTERNS)))
    except (OSError, ValueError) as exc:  # the hub's misses and HTTP errors are OSErrors
        why = ("the hub is offline (HF_HUB_OFFLINE)" if offline
               else f"downloading it failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
        raise SrddError(f"model {spec!r}: {repo_id} (revision {revision or 'main'}) is not in the Hugging Face "
                        f"cache {cache} and {why}; fetch it with `{fetch_command(repo_id, revision)}`") from None
    if not (path / "config.json").is_file():
        raise SrddError(f"model {spec!r}: the cached snapshot {path} has no config.json; fetch it again with "
                        f"`{fetch_command(repo_id, revision)}`")
    return HubSnapshot(repo_id, path.name, path)
