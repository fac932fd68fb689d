"""The manifest schema: the seed's example parses; broken manifests name file and field."""

import json

import pytest

from inference_pio.plugin import ManifestError, PluginType, load_manifest, parse_manifest

SEED_EXAMPLE = {
    "name": "NomeDoModelo",
    "version": "1.0.0",
    "author": "Seu Nome",
    "description": "Descrição do seu modelo",
    "plugin_type": "MODEL_COMPONENT",
    "dependencies": ["torch", "transformers"],
    "compatibility": {
        "torch_version": ">=2.0.0",
        "transformers_version": ">=4.30.0",
        "python_version": ">=3.8",
        "min_memory_gb": 8.0,
    },
    "model_architecture": "Tipo de Arquitetura",
    "model_size": "Tamanho do Modelo",
    "required_memory_gb": 8.0,
    "supported_modalities": ["text"],
    "license": "MIT",
    "tags": ["descricao", "do", "modelo"],
    "model_family": "Familia do Modelo",
    "num_parameters": 0,
    "entry_point": {
        "module": ".plugin",
        "class": "NomeDoModelo_Plugin",
        "factory_function": "create_nome_do_modelo_plugin",
    },
}


def write(tmp_path, data, name="plugin_manifest.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_seed_example_parses_with_every_field(tmp_path):
    m = load_manifest(write(tmp_path, {**SEED_EXAMPLE, "model_types": ["llama"],
                                       "architectures": ["LlamaForCausalLM"], "capabilities": ["chat"]}))
    assert m.plugin_type is PluginType.MODEL_COMPONENT
    assert m.compatibility.torch_version == ">=2.0.0" and m.compatibility.min_memory_gb == 8.0
    assert m.entry_point.class_name == "NomeDoModelo_Plugin"
    assert m.entry_point.factory_function == "create_nome_do_modelo_plugin"
    assert (m.model_types, m.architectures, m.capabilities) == (["llama"], ["LlamaForCausalLM"], ["chat"])
    meta = m.to_metadata()
    assert meta.name == "NomeDoModelo" and meta.tags == ["descricao", "do", "modelo"]
    assert meta.compatibility["python_version"] == ">=3.8"
    assert meta.plugin_type is PluginType.MODEL_COMPONENT


def test_load_manifest_accepts_the_plugin_folder(tmp_path):
    write(tmp_path, SEED_EXAMPLE)
    assert load_manifest(tmp_path).name == "NomeDoModelo"


def test_optional_fields_take_defaults():
    required = {k: SEED_EXAMPLE[k] for k in ("name", "version", "author", "description", "plugin_type", "entry_point")}
    m = parse_manifest(required)
    assert m.dependencies == [] and m.model_types == [] and m.supported_modalities == ["text"]
    assert m.compatibility.torch_version is None and m.compatibility.min_memory_gb == 0.0


def test_invalid_json_names_the_file_and_position(tmp_path):
    path = write(tmp_path, '{"name": "x",\n  "version": }')
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert err.value.path == str(path) and err.value.field is None
    assert str(path) in str(err.value) and "line 2" in str(err.value)


def test_top_level_must_be_an_object(tmp_path):
    with pytest.raises(ManifestError, match="JSON object"):
        load_manifest(write(tmp_path, "[1, 2]"))


def test_missing_file_is_a_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match="cannot be read"):
        load_manifest(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"entry_point": None}, "entry_point"),
        ({"num_parameters": "7"}, "num_parameters"),
        ({"num_parameters": -1}, "num_parameters"),
        ({"required_memory_gb": "8"}, "required_memory_gb"),
        ({"compatibility": {"min_memory_gb": "8"}}, "compatibility.min_memory_gb"),
        ({"compatibility": {"torch_version": "2.x"}}, "compatibility.torch_version"),
        ({"plugin_type": "MODEL"}, "plugin_type"),
        ({"version": "one"}, "version"),
        ({"dependencies": ["torch>>2"]}, "dependencies"),
        ({"tags": "llama"}, "tags"),
        ({"model_types": ["llama", 3]}, "model_types.1"),
        ({"entry_point": {"module": ".plugin"}}, "entry_point.class"),
        ({"dependecies": ["torch"]}, "dependecies"),  # a misspelt key is refused, not ignored
    ],
)
def test_wrong_field_names_file_and_field(tmp_path, change, field):
    data = {**SEED_EXAMPLE, **change}
    if change.get("entry_point", 0) is None:
        del data["entry_point"]
    path = write(tmp_path, data)
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert err.value.field == field
    assert str(path) in str(err.value) and f"field '{field}'" in str(err.value)


def test_every_problem_is_listed(tmp_path):
    data = {k: v for k, v in SEED_EXAMPLE.items() if k not in ("author", "version")}
    with pytest.raises(ManifestError) as err:
        load_manifest(write(tmp_path, data))
    assert "version" in str(err.value) and "author" in str(err.value)
