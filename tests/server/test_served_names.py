"""``pio serve PATH`` names the model by the file's stem (as the README's client example expects) and
answers to the path as typed too; --name wins; a catalogue name is its own name."""

from __future__ import annotations

import pytest

from inference_pio.cli.serve import served_names
from inference_pio.server import ServedModel, ServerState
from inference_pio.server.errors import APIError


def test_a_file_is_named_by_its_stem_and_answers_to_its_path(tmp_path, monkeypatch):
    gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.chdir(tmp_path)
    for spec in (str(gguf), "SmolLM2-135M-Instruct.Q4_1.gguf", "./SmolLM2-135M-Instruct.Q4_1.gguf"):
        name, aliases = served_names(None, spec, gguf)
        assert name == "SmolLM2-135M-Instruct.Q4_1" and spec in aliases and str(gguf) in aliases
        state = ServerState(ServedModel(name, object(), aliases=aliases))
        assert state.generation_model(name) is state.generation_model(spec) is state.generator
    with pytest.raises(APIError) as e:
        state.generation_model("SmolLM2-135M-Instruct")
    assert e.value.status == 404


def test_folder_catalogue_default_and_explicit_names(tmp_path):
    folder = tmp_path / "tiny-llama"
    folder.mkdir()
    assert served_names(None, str(folder), folder) == ("tiny-llama", (str(folder),))
    assert served_names("mine", str(folder), folder) == ("mine", ())
    assert served_names(None, "smollm2", tmp_path / "x" / "model.gguf") == ("smollm2", ())
    default = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    default.write_bytes(b"GGUF")
    assert served_names(None, None, default) == ("SmolLM2-135M-Instruct.Q4_1", ())
