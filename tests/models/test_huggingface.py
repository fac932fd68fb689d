"""The Hugging Face source: models reused from a hub cache the test lays out (HF_HUB_OFFLINE=1,
no HTTP), and a real snapshot download from a hub served on 127.0.0.1 through HF_ENDPOINT."""

from __future__ import annotations

import asyncio

import pytest

from inference_pio.models import (DigestMismatchError, DownloadError, InvalidModelError, ModelNotFoundError,
                                  ModelSource, ModelType)

from .builders import folder_files, layout_hub_cache, write_checkpoint
from .servers import HubState, hugging_face_hub


@pytest.fixture
def cached_repo(env, tmp_path):
    params = write_checkpoint(tmp_path / "src", model_type="qwen2", architectures=("Qwen2ForCausalLM",))
    snapshot = layout_hub_cache(env["hub"], "org/Tiny-Qwen", folder_files(tmp_path / "src"))
    return snapshot, params


def test_offline_reuses_the_hub_cache(manager, cached_repo, monkeypatch):
    snapshot, params = cached_repo
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = asyncio.run(manager.download_model("org/Tiny-Qwen", source="huggingface"))
    assert info.id == "local/qwen/Tiny-Qwen" and info.path == snapshot and info.parameter_count == params
    assert (info.source, info.owned, info.origin, info.plugin) == (ModelSource.HUGGINGFACE, False, "org/Tiny-Qwen",
                                                                   "Qwen2")
    assert info.size_bytes == sum(p.stat().st_size for p in snapshot.iterdir())
    asyncio.run(manager.remove_model(info.id))  # the hub cache is not ours to delete
    assert (snapshot / "model.safetensors").is_file() and manager.list_models() == []


def test_cache_without_refs_is_found_by_scanning(manager, env, tmp_path, monkeypatch):
    write_checkpoint(tmp_path / "src")
    snapshot = layout_hub_cache(env["hub"], "org/NoRefs", folder_files(tmp_path / "src"), refs=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    info = asyncio.run(manager.download_model("org/NoRefs", ModelType.DEEPSEEK, "huggingface", name="norefs"))
    assert info.id == "local/deepseek/norefs" and info.path == snapshot


def test_offline_and_not_cached_is_a_clear_error(manager, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="org/Missing is not in the Hugging Face cache.*HF_HUB_OFFLINE"):
        asyncio.run(manager.download_model("org/Missing", source="huggingface"))
    assert manager.catalogue.all() == []


def test_unreachable_hub_is_a_download_error(manager):
    with pytest.raises(DownloadError, match="org/Missing.*127.0.0.1:9"):
        asyncio.run(manager.download_model("org/Missing", source="huggingface"))
    assert manager.catalogue.all() == []


@pytest.mark.parametrize("repo_id", ["../../etc", "org/name/extra", "", "org/../x"])
def test_bad_repo_ids(manager, repo_id):
    with pytest.raises(InvalidModelError, match="not a Hugging Face repo id"):
        asyncio.run(manager.download_model(repo_id, source="huggingface"))


# A hub on 127.0.0.1 through HF_ENDPOINT -----------------------------------------------------


@pytest.fixture
def hub(env, tmp_path, monkeypatch):
    params = write_checkpoint(tmp_path / "served", model_type="mistral", architectures=("MistralForCausalLM",))
    state = HubState("org/Tiny-Mistral", folder_files(tmp_path / "served"), lfs=("model.safetensors",))
    with hugging_face_hub(state) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        yield state, params


def test_snapshot_download_from_hf_endpoint(manager, env, hub):
    state, params = hub
    info = asyncio.run(manager.download_model("org/Tiny-Mistral", source="huggingface"))
    assert info.id == "local/mistral/Tiny-Mistral" and info.owned and info.parameter_count == params
    assert info.path == env["hub"] / "models--org--Tiny-Mistral" / "snapshots" / state.commit
    assert folder_files(info.path) == state.files
    assert any(r.startswith("GET /org/Tiny-Mistral/resolve/") for r in state.requests)
    # Downloaded by us, so removing the model frees the hub cache entry.
    asyncio.run(manager.remove_model(info.id))
    assert not (env["hub"] / "models--org--Tiny-Mistral").exists()


def test_offline_makes_no_http_call_even_with_a_hub_up(manager, hub, monkeypatch):
    state, _ = hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="HF_HUB_OFFLINE"):
        asyncio.run(manager.download_model("org/Tiny-Mistral", source="huggingface"))
    assert state.requests == [] and manager.catalogue.all() == []


def test_bytes_not_matching_the_listed_sha256_are_refused_and_dropped(manager, env, hub):
    state, _ = hub
    good = state.files["model.safetensors"]
    state.tamper["model.safetensors"] = good[:-1] + bytes([good[-1] ^ 0xFF])
    with pytest.raises(DigestMismatchError, match="org/Tiny-Mistral/model.safetensors: sha256"):
        asyncio.run(manager.download_model("org/Tiny-Mistral", source="huggingface"))
    assert manager.catalogue.all() == []
    # The bad blob was not kept: once the hub serves the right bytes, the next pull completes the cache entry.
    del state.tamper["model.safetensors"]
    info = asyncio.run(manager.download_model("org/Tiny-Mistral", source="huggingface"))
    assert (info.path / "model.safetensors").read_bytes() == good


def test_unknown_repo_on_the_hub(manager, hub):
    with pytest.raises(ModelNotFoundError, match="has no model 'org/Nope'"):
        asyncio.run(manager.download_model("org/Nope", source="huggingface"))
    assert manager.catalogue.all() == []
