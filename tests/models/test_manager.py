"""LocalModelManager over real files: checkpoint folders, custom models, removal rules, and every
bad input giving a clear error with nothing written to the catalogue."""

from __future__ import annotations

import asyncio
import logging

import pytest

from inference_pio.models import (InvalidModelError, LocalModelManager, ModelExistsError, ModelFormat,
                                  ModelNotFoundError, ModelSource, ModelType, UnknownSourceError)

from .builders import initialized_manager, write_checkpoint, write_gguf


def test_import_checkpoint_folder(manager, tmp_path):
    params = write_checkpoint(tmp_path / "tiny-llama", dtype="bfloat16")
    info = asyncio.run(manager.import_path(tmp_path / "tiny-llama"))
    assert info.id == "local/llama/tiny-llama" and info.family == ModelType.LLAMA
    assert (info.format, info.source, info.dtype, info.quantization) == (
        ModelFormat.SAFETENSORS, ModelSource.HUGGINGFACE, "bfloat16", None)
    assert info.parameter_count == params and info.plugin == "Llama"
    assert info.size_bytes == sum(p.stat().st_size for p in (tmp_path / "tiny-llama").iterdir())
    assert info.capabilities == ("generation", "chat", "embeddings") and not info.owned


@pytest.mark.parametrize("model_type, architectures, family, capabilities", [
    ("qwen2", ("Qwen2ForCausalLM",), ModelType.QWEN, ("generation", "embeddings")),
    ("mistral", ("MistralForCausalLM",), ModelType.MISTRAL, ("generation", "embeddings")),
    ("bert", ("BertModel",), ModelType.BERT, ("embeddings",)),
])
def test_family_and_capabilities_from_config(manager, tmp_path, model_type, architectures, family, capabilities):
    write_checkpoint(tmp_path / "m", model_type=model_type, architectures=architectures, chat_template=False,
                     dtype="float32")
    info = asyncio.run(manager.import_path(tmp_path / "m"))
    assert (info.family, info.capabilities, info.dtype) == (family, capabilities, "float32")


def test_removing_an_imported_model_keeps_the_users_files(manager, tmp_path):
    write_checkpoint(tmp_path / "mine")
    gguf = tmp_path / "mine.gguf"
    write_gguf(gguf)
    def user_files():
        return {p: p.read_bytes() for p in [gguf, *(tmp_path / "mine").iterdir()]}

    before = user_files()
    for path in (tmp_path / "mine", gguf):
        info = asyncio.run(manager.import_path(path, name=path.name.replace(".", "-")))
        assert asyncio.run(manager.remove_model(info.id)) == info
    assert user_files() == before and len(before) == 4
    assert manager.list_models() == [] and manager.catalogue.all() == []


def test_custom_folder_with_a_plugin(manager, tmp_path):
    write_checkpoint(tmp_path / "exotic", model_type="exotic", architectures=("ExoticForCausalLM",),
                     extra={"plugin": "llama"})
    info = asyncio.run(manager.download_model(str(tmp_path / "exotic"), source="custom"))
    assert info.id == "local/custom/exotic" and info.source == ModelSource.CUSTOM and info.plugin == "Llama"
    named = asyncio.run(manager.import_path(tmp_path / "exotic", ModelType.LLAMA, "exotic2", plugin="Qwen2"))
    assert named.plugin == "Qwen2" and named.source == ModelSource.CUSTOM


@pytest.mark.parametrize("plugin, message", [(None, "needs a plugin name"), ("nosuch", "no plugin named 'nosuch'")])
def test_custom_folder_without_a_known_plugin(manager, tmp_path, plugin, message):
    write_checkpoint(tmp_path / "exotic", model_type="exotic")
    with pytest.raises(InvalidModelError, match=message):
        asyncio.run(manager.download_model(str(tmp_path / "exotic"), source="custom", plugin=plugin))
    assert manager.catalogue.all() == []


def test_seed_usage_reads_the_catalogue_other_processes_wrote(env, tmp_path):
    write_gguf(tmp_path / "llama-7b.gguf")
    writer = initialized_manager(logger=logging.getLogger("test"))
    asyncio.run(writer.download_model(str(tmp_path / "llama-7b.gguf"), ModelType.LLAMA, "gguf"))
    reader = initialized_manager()
    assert [m.id for m in reader.list_models(ModelType.LLAMA)] == ["local/llama/llama-7b"]
    assert reader.list_models("deepseek") == []
    asyncio.run(writer.remove_model("local/llama/llama-7b"))
    assert reader.get_model("local/llama/llama-7b")  # its copy is as of its last refresh
    asyncio.run(reader.refresh())
    assert reader.list_models() == []


# Bad input -------------------------------------------------------------------------------


def test_unknown_model_id_is_a_keyerror_naming_it_and_what_exists(manager, tmp_path):
    write_gguf(tmp_path / "known.gguf")
    asyncio.run(manager.import_path(tmp_path / "known.gguf"))
    with pytest.raises(KeyError) as error:
        manager.get_model("local/llama/unknown")
    assert isinstance(error.value, ModelNotFoundError)
    assert str(error.value).startswith("no model 'local/llama/unknown'") and "local/llama/known" in str(error.value)
    with pytest.raises(ModelNotFoundError, match="unknown"):
        asyncio.run(manager.remove_model("local/llama/unknown"))


def test_unknown_source_and_model_type(manager, tmp_path):
    write_gguf(tmp_path / "m.gguf")
    with pytest.raises(UnknownSourceError, match="unknown model source 'civitai'.*huggingface, gguf, ollama, custom"):
        asyncio.run(manager.download_model("m", source="civitai"))
    with pytest.raises(InvalidModelError, match="unknown model type 'gpt'"):
        asyncio.run(manager.import_path(tmp_path / "m.gguf", model_type="gpt"))
    assert manager.catalogue.all() == []


@pytest.mark.parametrize("layout, message", [
    ("missing", "no such file or folder"),
    ("no config", "config.json: no such file"),
    ("pickle only", "pickle checkpoints are refused"),
    ("bad config", "config.json: invalid JSON"),
    ("truncated safetensors", "model.safetensors"),
    ("missing shard", "missing shard"),
])
def test_bad_checkpoint_folders(manager, tmp_path, layout, message):
    folder = tmp_path / "ckpt"
    if layout != "missing":
        write_checkpoint(folder)
    if layout == "no config":
        (folder / "config.json").unlink()
    elif layout == "pickle only":
        (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    elif layout == "bad config":
        (folder / "config.json").write_text("{not json")
    elif layout == "truncated safetensors":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[:-10])
    elif layout == "missing shard":
        (folder / "model.safetensors.index.json").write_text(
            '{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}')
    with pytest.raises(InvalidModelError, match=message):
        asyncio.run(manager.import_path(folder))
    assert manager.catalogue.all() == []


@pytest.mark.parametrize("name", ["a/b", "../x", "", "with space", ".hidden"])
def test_bad_catalogue_names(manager, tmp_path, name):
    write_gguf(tmp_path / "m.gguf")
    with pytest.raises(InvalidModelError, match="model name"):
        asyncio.run(manager.import_path(tmp_path / "m.gguf", name=name))
    assert manager.catalogue.all() == []


def test_same_id_for_another_file_is_refused(manager, tmp_path):
    for folder in ("a", "b"):
        write_gguf(tmp_path / folder / "m.gguf")
    first = asyncio.run(manager.import_path(tmp_path / "a" / "m.gguf"))
    assert asyncio.run(manager.import_path(tmp_path / "a" / "m.gguf")) == first  # importing again is harmless
    with pytest.raises(ModelExistsError, match="already taken"):
        asyncio.run(manager.import_path(tmp_path / "b" / "m.gguf"))
    assert manager.list_models() == [first]


def test_use_before_initialize_says_so(env):
    with pytest.raises(RuntimeError, match="initialize"):
        LocalModelManager().list_models()


def test_progress_bars_go_to_stderr_and_can_be_disabled(env, tmp_path, capfd, monkeypatch):
    from .builders import layout_ollama_model

    path = tmp_path / "w.gguf"
    write_gguf(path)
    layout_ollama_model(env["ollama"], "shown", "latest", path.read_bytes())
    monkeypatch.delenv("INFERENCE_PIO_PROGRESS")
    asyncio.run(initialized_manager().download_model("shown", source="ollama"))
    out, err = capfd.readouterr()
    assert out == "" and "checking sha256-" in err
    layout_ollama_model(env["ollama"], "quiet", "latest", path.read_bytes())
    asyncio.run(initialized_manager(progress=False).download_model("quiet", source="ollama"))
    assert capfd.readouterr() == ("", "")
