"""GGUF files: metadata read with the gguf package, and corrupt files refused before the catalogue."""

from __future__ import annotations

import asyncio

import pytest

from inference_pio.models import DigestMismatchError, InvalidModelError, ModelFormat, ModelSource, ModelType

from .builders import visible, write_gguf


def test_import_gguf_reads_family_parameters_and_quantization(manager, tmp_path):
    path = tmp_path / "TinyLlama Chat.gguf"
    params = write_gguf(path, arch="llama", chat_template="{{ messages }}")
    info = asyncio.run(manager.import_path(path))
    assert info.id == "local/llama/TinyLlama-Chat"
    assert (info.family, info.format, info.source) == (ModelType.LLAMA, ModelFormat.GGUF, ModelSource.GGUF)
    assert info.parameter_count == params == 16 * 32 + 64 * 256 + 32
    assert info.quantization == "Q4_1" and info.dtype is None
    assert info.size_bytes == path.stat().st_size
    assert info.capabilities == ("generation", "chat", "embeddings")
    assert info.plugin == "Llama" and info.owned is False and info.path == path.resolve()
    assert manager.get_model(info.id) == info


@pytest.mark.parametrize("arch, name, family", [
    ("qwen2", "q", ModelType.QWEN), ("mistral", "m", ModelType.MISTRAL),
    ("llama", "deepseek-coder", ModelType.DEEPSEEK), ("bert", "minilm", ModelType.BERT),
    ("gpt2", "gpt", ModelType.CUSTOM),  # an architecture no installed plugin serves (phi3 has its plugin now)
])
def test_family_from_architecture_and_name(manager, tmp_path, arch, name, family):
    path = tmp_path / f"{name}.gguf"
    write_gguf(path, arch=arch, name=name)
    info = asyncio.run(manager.import_path(path))
    assert info.family == family and info.id == f"local/{family.value}/{name}"
    assert info.capabilities == (("embeddings",) if arch == "bert" else ("generation", "embeddings"))


def test_float_gguf_has_dtype_not_quantization(manager, tmp_path):
    path = tmp_path / "f16.gguf"
    write_gguf(path, quantized=False)
    info = asyncio.run(manager.import_path(path, name="f16"))
    assert (info.dtype, info.quantization) == ("float16", None)


def test_explicit_family_and_name_win(manager, tmp_path):
    path = tmp_path / "x.gguf"
    write_gguf(path, arch="llama")
    info = asyncio.run(manager.import_path(path, ModelType.DEEPSEEK, "my-model"))
    assert info.id == "local/deepseek/my-model"


@pytest.mark.parametrize("damage", ["wrong magic", "garbage header", "truncated", "empty"])
def test_corrupt_gguf_is_refused_and_nothing_catalogued(manager, tmp_path, damage):
    path = tmp_path / "bad.gguf"
    write_gguf(path)
    data = path.read_bytes()
    path.write_bytes({"wrong magic": b"GGML" + data[4:], "garbage header": data[:8] + b"\xff" * 200,
                      "truncated": data[: len(data) - 100], "empty": b""}[damage])
    with pytest.raises(InvalidModelError, match="bad.gguf: ") as error:
        asyncio.run(manager.import_path(path))
    assert any(word in str(error.value) for word in ("not a GGUF file", "truncated", "corrupt"))
    assert manager.list_models() == []
    assert manager.catalogue.all() == []


def test_gguf_source_download_model_takes_a_local_path(manager, tmp_path):
    path = tmp_path / "model.gguf"
    write_gguf(path, arch="qwen2")
    info = asyncio.run(manager.download_model(str(path), source="gguf"))
    assert info.id == "local/qwen/model" and info.source == ModelSource.GGUF


@pytest.fixture
def file_server(tmp_path):
    import functools
    from http.server import SimpleHTTPRequestHandler

    from .servers import serve

    served = tmp_path / "served"
    served.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    with serve(functools.partial(Quiet, directory=str(served))) as url:
        yield served, url


def test_gguf_url_download_is_checked_and_owned(manager, env, file_server):
    import hashlib

    served, url = file_server
    write_gguf(served / "remote-model.gguf", arch="mistral")
    data = (served / "remote-model.gguf").read_bytes()
    with pytest.raises(DigestMismatchError, match="sha256"):
        asyncio.run(manager.download_model(f"{url}/remote-model.gguf", source="gguf", sha256="0" * 64))
    assert manager.catalogue.all() == [] and not visible(env["home"] / "models" / "gguf")
    info = asyncio.run(manager.download_model(f"{url}/remote-model.gguf", source="gguf",
                                              sha256=hashlib.sha256(data).hexdigest()))
    assert info.id == "local/mistral/remote-model" and info.owned and info.path.read_bytes() == data
    asyncio.run(manager.remove_model(info.id))
    assert not info.path.exists()


def test_gguf_url_that_is_not_gguf_is_not_kept(manager, env, file_server):
    served, url = file_server
    (served / "page.gguf").write_bytes(b"<html>not found</html>")
    with pytest.raises(InvalidModelError, match="not a GGUF file"):
        asyncio.run(manager.download_model(f"{url}/page.gguf", source="gguf"))
    assert manager.catalogue.all() == [] and not visible(env["home"] / "models" / "gguf")
