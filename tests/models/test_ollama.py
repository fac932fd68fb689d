"""The Ollama source: the local store (manifests + sha256 blobs) and pulls from an Ollama-style
registry on 127.0.0.1, with resumed downloads, digest checks and path-traversal refusals."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pytest

from inference_pio.models import (DigestMismatchError, DownloadError, InvalidModelError, LocalModelManager,
                                  ModelNotFoundError, ModelSource, ModelType, UnsafeManifestError)

from .builders import (MODEL_MEDIA_TYPE, initialized_manager, layout_ollama_model, run_together, sha256_hex, visible,
                       write_gguf, write_manifest)
from .servers import ollama_registry


@pytest.fixture
def gguf_bytes(tmp_path) -> bytes:
    path = tmp_path / "weights.gguf"
    write_gguf(path, arch="llama", rows=512, chat_template="{{ messages }}")
    return path.read_bytes()


def test_seed_example_imports_from_the_local_ollama_store(env, gguf_bytes):
    layout_ollama_model(env["ollama"], "llama-7b", "latest", gguf_bytes, extra_layers={
        "application/vnd.ollama.image.template": b"{{ .Prompt }}"})

    async def seed_example():
        manager = LocalModelManager(logger=None)
        await manager.initialize()
        assert manager.list_models(ModelType.LLAMA) == [] and manager.list_models(ModelType.DEEPSEEK) == []
        model = await manager.download_model(model_name="llama-7b", model_type=ModelType.LLAMA, source="ollama")
        return manager, model, manager.get_model("local/llama/llama-7b")

    manager, model, again = asyncio.run(seed_example())
    assert model == again and manager.list_models(ModelType.LLAMA) == [model]
    blob = env["ollama"] / "blobs" / f"sha256-{sha256_hex(gguf_bytes)}"
    assert model.path == blob and model.source == ModelSource.OLLAMA and model.owned is False
    assert model.quantization == "Q4_1" and model.size_bytes == len(gguf_bytes)
    assert model.origin == "ollama:llama-7b"
    # Ollama's files are Ollama's: removing the catalogue entry leaves them.
    asyncio.run(manager.remove_model(model.id))
    assert blob.read_bytes() == gguf_bytes and manager.list_models() == []


def test_tagged_name_and_detected_family(manager, env, gguf_bytes):
    layout_ollama_model(env["ollama"], "qwen-mini", "0.5b", gguf_bytes)
    info = asyncio.run(manager.download_model("qwen-mini:0.5b", source="ollama"))
    assert info.id == "local/llama/qwen-mini:0.5b"  # the GGUF says llama; the name does not override it


def test_store_blob_with_wrong_sha256_is_refused(manager, env, gguf_bytes):
    layout_ollama_model(env["ollama"], "bad", "latest", gguf_bytes, weights_digest="0" * 64)
    with pytest.raises(DigestMismatchError, match="sha256"):
        asyncio.run(manager.download_model("bad", source="ollama"))
    assert manager.catalogue.all() == []


@pytest.mark.parametrize("digest", ["sha256:../../../../etc/passwd", "sha256:" + "A" * 64, "md5:abc", None])
def test_manifest_pointing_outside_the_store_is_refused(manager, env, gguf_bytes, digest):
    write_manifest(env["ollama"], "evil", "latest", {"schemaVersion": 2, "layers": [
        {"mediaType": MODEL_MEDIA_TYPE, "digest": digest, "size": len(gguf_bytes)}]})
    with pytest.raises(UnsafeManifestError, match="digest"):
        asyncio.run(manager.download_model("evil", source="ollama"))
    assert manager.catalogue.all() == []


@pytest.mark.parametrize("name", ["../../etc/passwd", "library/../x", "a:b/../../c", "..:latest", ""])
def test_names_that_would_escape_the_store_are_refused(manager, name):
    with pytest.raises(UnsafeManifestError, match="Ollama model name"):
        asyncio.run(manager.download_model(name, source="ollama"))
    assert manager.catalogue.all() == []


@pytest.mark.parametrize("manifest, message", [
    ({"schemaVersion": 2, "layers": []}, "no weights layer"),
    ({"schemaVersion": 2}, "no layers"),
    ({"schemaVersion": 2, "layers": [{"mediaType": MODEL_MEDIA_TYPE, "digest": "sha256:" + "1" * 64,
                                      "size": 10}]}, "missing"),
])
def test_broken_manifests_are_clear_errors(manager, env, manifest, message):
    write_manifest(env["ollama"], "broken", "latest", manifest)
    with pytest.raises(InvalidModelError, match=message):
        asyncio.run(manager.download_model("broken", source="ollama"))
    assert manager.catalogue.all() == []


def test_store_blob_that_is_not_gguf_is_refused(manager, env):
    layout_ollama_model(env["ollama"], "notgguf", "latest", b"not a gguf file at all")
    with pytest.raises(InvalidModelError, match="not a GGUF file"):
        asyncio.run(manager.download_model("notgguf", source="ollama"))
    assert manager.catalogue.all() == []


# Registry pulls ------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path, gguf_bytes):
    """A registry serving 'tiny:1b' (weights + a params layer) from its own store folder."""
    store = tmp_path / "registry-store"
    layout_ollama_model(store, "tiny", "1b", gguf_bytes, extra_layers={
        "application/vnd.ollama.image.params": b'{"temperature": 0.7}'})
    with ollama_registry(store) as (url, state):
        yield url, state, store


def test_pull_from_registry_checks_and_stores_every_layer(env, registry, gguf_bytes):
    url, state, _ = registry
    manager = initialized_manager(ollama_registry=url)
    info = asyncio.run(manager.download_model("tiny:1b", ModelType.LLAMA, "ollama"))
    pulled = env["home"] / "models" / "ollama"
    assert info.id == "local/llama/tiny:1b" and info.owned and info.path.parent == pulled / "blobs"
    assert hashlib.sha256(info.path.read_bytes()).hexdigest() == sha256_hex(gguf_bytes)
    manifest = pulled / "manifests" / url.removeprefix("http://") / "library" / "tiny" / "1b"
    assert len(json.loads(manifest.read_text())["layers"]) == 2
    assert sorted(p.name for p in visible(pulled / "blobs")) == sorted(
        f"sha256-{layer['digest'][7:]}" for layer in json.loads(manifest.read_text())["layers"])
    # A second process sees it; pulling again costs nothing.
    other = initialized_manager()
    assert other.get_model("local/llama/tiny:1b") == info
    requests = len(state.requests)
    assert asyncio.run(manager.download_model("tiny:1b", ModelType.LLAMA, "ollama")) == info
    assert len(state.requests) == requests
    # The manager owns the pulled files: removing the model deletes manifest and blobs.
    asyncio.run(manager.remove_model(info.id))
    assert not manifest.exists() and not visible(pulled / "blobs")


def test_interrupted_pull_leaves_no_model_and_resumes_with_range(env, registry, gguf_bytes):
    url, state, _ = registry
    state.cut_next_blob_after = 3000
    manager = initialized_manager(ollama_registry=url)
    with pytest.raises(DownloadError, match="resume"):
        asyncio.run(manager.download_model("tiny:1b", source="ollama"))
    assert manager.catalogue.all() == []
    blobs = env["home"] / "models" / "ollama" / "blobs"
    partial = blobs / f"sha256-{sha256_hex(gguf_bytes)}-partial"
    assert partial.stat().st_size == 3000 and not partial.with_name(partial.name[:-8]).exists()
    assert not (env["home"] / "models" / "ollama" / "manifests").exists()

    info = asyncio.run(manager.download_model("tiny:1b", source="ollama"))
    assert ("bytes=3000-" in [r for _, r in state.requests])
    assert info.path.read_bytes() == gguf_bytes and not partial.exists()
    assert [m.id for m in manager.list_models()] == ["local/llama/tiny:1b"]


def test_registry_blob_with_bad_digest_is_refused_and_not_kept(env, tmp_path, gguf_bytes):
    store = tmp_path / "lying-registry"
    layout_ollama_model(store, "liar", "latest", gguf_bytes, weights_digest="f" * 64)
    with ollama_registry(store) as (url, _):
        manager = initialized_manager(ollama_registry=url)
        with pytest.raises(DigestMismatchError, match="sha256"):
            asyncio.run(manager.download_model("liar", source="ollama"))
    assert manager.catalogue.all() == []
    blobs = env["home"] / "models" / "ollama" / "blobs"
    assert not (blobs / f"sha256-{'f' * 64}").exists() and not (blobs / f"sha256-{'f' * 64}-partial").exists()


def test_registry_manifest_with_traversal_digest_writes_nothing(env, tmp_path):
    store = tmp_path / "evil-registry"
    write_manifest(store, "evil", "latest", {"schemaVersion": 2, "layers": [
        {"mediaType": MODEL_MEDIA_TYPE, "digest": "sha256:../../../outside", "size": 4}]})
    with ollama_registry(store) as (url, state):
        manager = initialized_manager(ollama_registry=url)
        with pytest.raises(UnsafeManifestError):
            asyncio.run(manager.download_model("evil", source="ollama"))
    assert [path for path, _ in state.requests] == ["/v2/library/evil/manifests/latest"]
    assert not (env["home"] / "models").exists() and manager.catalogue.all() == []


def test_unknown_registry_model_and_unreachable_registry(env, registry):
    url, _, _ = registry
    manager = initialized_manager(ollama_registry=url)
    with pytest.raises(ModelNotFoundError, match="no model 'nope'"):
        asyncio.run(manager.download_model("nope", source="ollama"))
    closed = initialized_manager(ollama_registry="http://127.0.0.1:9")
    with pytest.raises(DownloadError, match="127.0.0.1:9"):
        asyncio.run(closed.download_model("tiny:1b", source="ollama"))
    assert manager.catalogue.all() == []


def test_registry_url_from_environment(env, registry, monkeypatch):
    url, state, _ = registry
    monkeypatch.setenv("INFERENCE_PIO_OLLAMA_REGISTRY", url)
    manager = initialized_manager()
    assert asyncio.run(manager.download_model("tiny:1b", source="ollama")).id == "local/llama/tiny:1b"
    assert state.requests


def _pull_in_child(url: str, results, start) -> None:
    start.wait()
    manager = initialized_manager(ollama_registry=url)
    results.put(asyncio.run(manager.download_model("tiny:1b", source="ollama")).id)


def test_two_processes_pulling_the_same_model(env, registry, gguf_bytes):
    import multiprocessing

    url, state, _ = registry
    state.pause_s = 0.005  # keeps both transfers in flight at once
    results = multiprocessing.get_context("fork").Queue()
    run_together(_pull_in_child, [(url, results), (url, results)])
    assert [results.get(timeout=5), results.get(timeout=5)] == ["local/llama/tiny:1b"] * 2
    [info] = initialized_manager().list_models()
    assert info.path.read_bytes() == gguf_bytes


def test_catalogued_blob_is_recognised_as_gguf_by_the_loader(manager, env, gguf_bytes):
    from inference_pio.weights.gguf_file import is_gguf_file

    layout_ollama_model(env["ollama"], "loadable", "latest", gguf_bytes)
    info = asyncio.run(manager.download_model("loadable", source="ollama"))
    assert info.path.suffix == "" and is_gguf_file(info.path)


def test_oversized_registry_manifest_is_refused(env, tmp_path):
    store = tmp_path / "huge-registry"
    path = write_manifest(store, "huge", "latest", {})
    path.write_bytes(b" " * (2 << 20))
    with ollama_registry(store) as (url, _):
        manager = initialized_manager(ollama_registry=url)
        with pytest.raises(InvalidModelError, match="not an Ollama manifest"):
            asyncio.run(manager.download_model("huge", source="ollama"))
    assert manager.catalogue.all() == [] and not (env["home"] / "models").exists()
