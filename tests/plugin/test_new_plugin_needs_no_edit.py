"""A plugin folder named by INFERENCE_PIO_PLUGIN_PATH, declaring families no code lists, is seen by every
layer that deals in families or model types: the plugin manager, ``ModelType``, family detection, the
model manager's catalogue, ``inference_pio.load``'s routing by config.json, and the services' families.
Nothing outside the folder is edited."""

from __future__ import annotations

import asyncio
import json
import textwrap

import pytest
import torch
from safetensors.torch import save_file

import inference_pio
from inference_pio.models import LocalModelManager, ModelType
from inference_pio.models.families import detect_family
from inference_pio.plugin import ENV_VAR, can_embed, can_generate, installed_manager
from inference_pio.services.local import SERVICE_FOR_FAMILY, LlamaService, LocalModelService

from .plugin_files import manifest

# An embedding plugin: embed() gives each text its length and the checkpoint's hidden_size.
GECKO_CODE = '''
import json
from pathlib import Path

import torch

from inference_pio.plugin import CheckpointPlugin, plugin_metadata


class GeckoPlugin(CheckpointPlugin):
    def __init__(self):
        super().__init__(plugin_metadata(__file__))
        self.config = self.tokenizer = None
        self.embedding_dim = self.max_seq_length = 0

    def load(self, model_path=None, dtype="auto", device="auto", **options):
        self.config = json.loads((Path(model_path) / "config.json").read_text())
        self.embedding_dim, self.max_seq_length = 2, 64
        self.loaded_with = {"dtype": dtype, "device": device, **options}
        self.is_loaded = True

    def embed(self, texts, batch_size=32):
        return torch.tensor([[float(len(t)), float(self.config["hidden_size"])] for t in texts])

    def load_model(self, config=None):
        return None

    def infer(self, data):
        return self.embed(data)

    def tokenize(self, text, **kwargs):
        return list(text.encode())

    def detokenize(self, token_ids, **kwargs):
        return bytes(token_ids).decode()

    def generate_text(self, prompt, max_new_tokens=512, **kwargs):
        raise NotImplementedError("gecko embeds")

    def cleanup(self):
        self.is_loaded = False
        return True


def create_gecko_plugin():
    return GeckoPlugin()
'''


def write_folder(folder, manifest_data: dict, code: str) -> None:
    folder.mkdir(parents=True)
    (folder / "plugin_manifest.json").write_text(json.dumps(manifest_data))
    (folder / "__init__.py").write_text('"""A plugin written by a test."""\n')
    (folder / "plugin.py").write_text(textwrap.dedent(code))


@pytest.fixture
def new_plugins(tmp_path, monkeypatch):
    """Two plugins in one folder on INFERENCE_PIO_PLUGIN_PATH: Gecko (embeddings, family "Gecko",
    model_type gecko) and Heron (text generation, family "Heron Lab"; its code is never imported)."""
    root = tmp_path / "plugins"
    write_folder(root / "gecko", manifest(
        "Gecko", model_family="Gecko", model_types=["gecko"], architectures=["GeckoModel"],
        capabilities=["embeddings"],
        entry_point={"module": ".plugin", "class": "GeckoPlugin", "factory_function": "create_gecko_plugin"}),
        GECKO_CODE)
    write_folder(root / "heron", manifest(
        "Heron", model_family="Heron Lab", model_types=["heron"], architectures=["HeronForCausalLM"],
        capabilities=["text-generation", "chat"]), "raise ImportError('Heron code is not needed to list it')\n")
    monkeypatch.setenv(ENV_VAR, str(root))
    checkpoint = tmp_path / "gecko-tiny"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "gecko", "hidden_size": 7}))
    save_file({"weight": torch.zeros(2, 7)}, checkpoint / "model.safetensors")  # the catalogue wants weights
    return checkpoint


def test_the_families_come_from_the_manifests(new_plugins):
    families = installed_manager().families()
    assert {"llama", "qwen", "bert", "gecko", "heron-lab"} <= set(families)
    assert families["gecko"].plugins == ("Gecko",) and families["gecko"].model_types == ("gecko",)
    assert families["heron-lab"].generates and not families["gecko"].generates
    assert installed_manager().family_for_config({"model_type": "gecko"}) == families["gecko"]
    assert installed_manager().family_for_config({"architectures": ["HeronForCausalLM"]}).title == "Heron Lab"

    assert ModelType("gecko") is ModelType.GECKO and ModelType.GECKO.value == "gecko"
    assert ModelType("heron-lab") is ModelType.HERON_LAB
    assert {ModelType.GECKO, ModelType.HERON_LAB, ModelType.LLAMA, ModelType.CUSTOM} <= set(ModelType)
    assert detect_family("gecko") is ModelType.GECKO
    assert detect_family("HeronForCausalLM") is ModelType.HERON_LAB
    assert detect_family("llama", name="heron-lab-7b") is ModelType.LLAMA  # the checkpoint's words come first


def test_services_serve_a_new_generating_family_by_its_name(new_plugins):
    heron = SERVICE_FOR_FAMILY[ModelType.HERON_LAB]
    assert issubclass(heron, LocalModelService) and heron.__name__ == "HeronLabService"
    assert heron.family == "heron-lab" and SERVICE_FOR_FAMILY[ModelType("heron-lab")] is heron
    assert SERVICE_FOR_FAMILY[ModelType.LLAMA] is LlamaService  # the seed's names stay
    assert ModelType.GECKO not in SERVICE_FOR_FAMILY  # an embedding family is no generation service


def test_load_routes_by_config_model_type_to_the_new_plugin(new_plugins):
    model = inference_pio.load(new_plugins, dtype=torch.float16, max_seq_len=9)
    try:
        assert model.plugin.metadata.name == "Gecko" and model.plugin.metadata.model_family == "Gecko"
        assert model.plugin.loaded_with == {"dtype": "float16", "device": "auto", "max_seq_len": 9}
        assert can_embed(model.plugin) and not can_generate(model.plugin) and model.is_embedding_model
        assert model.embed(["abc", "hello"]).tolist() == [[3.0, 7.0], [5.0, 7.0]]
        assert model.embedding_dim == 2 and model.max_model_len == 64
        with pytest.raises(ValueError, match="Gecko is an embedding model"):
            model.generate("hi")
    finally:
        model.close()


def test_the_model_manager_catalogues_the_new_family(new_plugins, tmp_path, monkeypatch):
    monkeypatch.setenv("INFERENCE_PIO_HOME", str(tmp_path / "home"))

    async def catalogue():
        manager = LocalModelManager()
        await manager.initialize()
        info = await manager.import_path(new_plugins)
        return info, manager.list_models(ModelType.GECKO), manager.list_models("gecko")

    info, by_member, by_text = asyncio.run(catalogue())
    assert info.id == "local/gecko/gecko-tiny" and info.family is ModelType.GECKO and info.plugin == "Gecko"
    assert by_member == by_text == [info]


def test_without_the_folder_the_family_is_unknown_but_catalogued_ones_stay_readable(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert "gecko" not in installed_manager().families()
    with pytest.raises(ValueError, match="'gecko' is not a valid ModelType.*llama"):
        ModelType("gecko")
    with pytest.raises(AttributeError, match="no family GECKO"):
        ModelType.GECKO  # noqa: B018
    assert ModelType.stored("gecko").value == "gecko"  # a catalogue row of an uninstalled plugin
