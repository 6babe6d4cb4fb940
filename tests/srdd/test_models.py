"""Model specs (DESIGN.md §4): hub ids and bare names resolve against a hub cache built in a temp dir, offline."""

import os
import subprocess
import sys

import pytest

from srdd.errors import SrddError
from srdd.hub import FAMILIES, fetch_command
from srdd.models import resolve_model
from srdd.tiny import hub_snapshot
from tests.conftest import QWEN_COMMIT, QWEN_REPO


@pytest.mark.parametrize("spec", ["Qwen2.5-7B", "Qwen/Qwen2.5-7B", "qwen2.5-7b"])
def test_both_spellings_resolve_offline_and_name_the_commit(offline_hub, spec):
    source = resolve_model(spec)
    assert source.path == offline_hub / "models--Qwen--Qwen2.5-7B" / "snapshots" / QWEN_COMMIT
    assert (source.repo_id, source.revision, source.name) == (QWEN_REPO, QWEN_COMMIT, QWEN_REPO)
    assert source.provenance() == {"spec": spec, "repo_id": QWEN_REPO, "revision": QWEN_COMMIT}


def test_a_revision_is_honoured_and_a_missing_one_named(offline_hub):
    assert resolve_model(QWEN_REPO, revision=QWEN_COMMIT).revision == QWEN_COMMIT
    with pytest.raises(SrddError) as err:
        resolve_model(QWEN_REPO, revision="a" * 40)
    assert f"revision {'a' * 40}" in str(err.value) and f"--revision {'a' * 40}" in str(err.value)


def test_offline_miss_names_model_cache_and_command(offline_hub):
    with pytest.raises(SrddError) as err:
        resolve_model("Qwen2.5-1.5B-Instruct")
    message = str(err.value)
    assert "Qwen/Qwen2.5-1.5B-Instruct" in message and str(offline_hub) in message
    assert "HF_HUB_OFFLINE" in message and fetch_command("Qwen/Qwen2.5-1.5B-Instruct", None) in message


def test_unknown_bare_name_says_what_was_searched(offline_hub):
    with pytest.raises(SrddError, match="not found: no file or directory.*not a known family name"):
        resolve_model("NoSuchModel-3B")


def test_bare_name_in_several_orgs(offline_hub):
    hub_snapshot(offline_hub, "someone/Qwen2.5-7B")  # the family's own org wins
    assert resolve_model("Qwen2.5-7B").repo_id == QWEN_REPO
    hub_snapshot(offline_hub, "a/Mystery-1B")
    hub_snapshot(offline_hub, "b/Mystery-1B")
    with pytest.raises(SrddError, match="ambiguous.*a/Mystery-1B, b/Mystery-1B"):
        resolve_model("Mystery-1B")


def test_family_table_covers_the_study():
    assert FAMILIES["qwen2.5-72b-instruct"] == "Qwen/Qwen2.5-72B-Instruct"
    assert FAMILIES["qwen2.5-0.5b"] == "Qwen/Qwen2.5-0.5B"
    assert FAMILIES["llama-3.1-8b-instruct"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert FAMILIES["smollm2-135m-instruct"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_online_downloads_weights_config_and_tokenizer_only(offline_hub, monkeypatch):
    import huggingface_hub
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    calls = []
    snapshot = offline_hub / "models--Qwen--Qwen2.5-7B" / "snapshots" / QWEN_COMMIT

    def fake_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert resolve_model("Qwen2.5-7B", revision="main").revision == QWEN_COMMIT
    (repo_id, kwargs), = calls
    assert repo_id == QWEN_REPO and kwargs["revision"] == "main" and kwargs["local_files_only"] is False
    assert kwargs["cache_dir"] == offline_hub
    assert "*.safetensors" in kwargs["allow_patterns"] and not any("bin" in p for p in kwargs["allow_patterns"])


def test_local_specs_refuse_a_revision(tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)).repo_id is None
    with pytest.raises(SrddError, match="hub models only"):
        resolve_model(str(tiny_model_dir), revision="main")
    with pytest.raises(SrddError, match="not found"):
        resolve_model("./no/such/dir")


def test_importing_srdd_sets_no_hub_variable():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    code = ("import os, srdd.models, srdd.scan.cli, rin_train.train; "
            "print([k for k in os.environ if k.startswith(('HF_', 'TRANSFORMERS_'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"


def test_a_hostile_chat_template_is_refused_with_one_line(tmp_path, tiny_model_dir):
    import shutil
    import subprocess

    model = tmp_path / "hostile"
    shutil.copytree(tiny_model_dir, model)
    (model / "chat_template.jinja").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    r = subprocess.run(["srdd", "scan", "--fmt", "mxfp4", "--model", str(model), "--out", str(tmp_path / "s.json"),
                        "--samples", "1", "--max-tokens", "8", "--no-progress"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("srdd scan: error: the chat template of")
    assert not (tmp_path / "s.json").exists()


def test_a_gguf_rewritten_in_place_is_converted_again(tmp_path, monkeypatch):
    """Same size, same mtime, other bytes: the conversion cache is keyed by the bytes (issue 27)."""
    import os

    from srdd.models import _gguf_cache_dir

    monkeypatch.setenv("SRDD_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\x01" * 60)
    before, st = _gguf_cache_dir(gguf), gguf.stat()
    gguf.write_bytes(b"GGUF" + b"\x02" * 60)
    os.utime(gguf, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert gguf.stat().st_size == st.st_size and gguf.stat().st_mtime_ns == st.st_mtime_ns
    assert _gguf_cache_dir(gguf) != before
    assert before.parent == tmp_path / "cache" / "models"


def test_a_tiny_name_is_one_model_built_once(tmp_path, monkeypatch):
    """`tiny-echo` resolves for every command (scan included) to one cached build: a scan of it describes the
    weights every seed's training starts from."""
    from safetensors.torch import load_file

    from srdd.tiny import build_tiny_model

    monkeypatch.setenv("SRDD_CACHE", str(tmp_path / "cache"))
    first = resolve_model("tiny-echo")
    assert first.name == "tiny-echo" and first.path.parent == tmp_path / "cache" / "models"
    mtime = (first.path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("tiny-echo").path == first.path  # not rebuilt
    assert (first.path / "model.safetensors").stat().st_mtime_ns == mtime
    seed0 = load_file(build_tiny_model("tiny-echo", tmp_path / "s0", seed=0) / "model.safetensors")
    cached = load_file(first.path / "model.safetensors")
    assert seed0.keys() == cached.keys() and all((seed0[k] == cached[k]).all() for k in seed0)
    assert resolve_model("tiny").path != first.path
    assert not [p for p in (tmp_path / "cache" / "models").iterdir() if p.name.startswith(".")]  # no temp dir left
