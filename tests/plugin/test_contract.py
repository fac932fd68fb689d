"""The plugin contract: what the generation and embedding protocols declare, how plugins are checked
against them without running their properties, and the errors a caller gets for a missing capability."""

from __future__ import annotations

import pytest

import inference_pio
from inference_pio.api import Model
from inference_pio.plugin import (EmbeddingPlugin, GenerationPlugin, MissingCapabilityError, PluginManager, can_embed,
                                  can_generate, missing_members, require)
from inference_pio.plugin.contract import protocol_members

from .plugin_files import write_plugin


def builtin(name: str):
    return PluginManager(env_var=None, entry_point_group=None).create_plugin(name)


def test_the_protocols_declare_what_the_layers_above_use():
    assert set(protocol_members(GenerationPlugin)) >= {"engine", "tokenizer", "config", "model", "kv_cache",
                                                       "metadata", "is_loaded", "tokenize", "detokenize", "cleanup"}
    assert set(protocol_members(EmbeddingPlugin)) >= {"embed", "embedding_dim", "max_seq_length", "config",
                                                      "tokenizer", "metadata", "is_loaded"}


def test_a_decoder_plugin_generates_and_does_not_embed():
    llama = builtin("Llama")
    assert can_generate(llama) and isinstance(llama, GenerationPlugin) and require(llama, GenerationPlugin) is llama
    assert not can_embed(llama) and "embed" in missing_members(llama, EmbeddingPlugin)


def test_an_encoder_plugin_embeds_and_its_raising_properties_are_not_run():
    bert = builtin("Bert")
    with pytest.raises(RuntimeError, match="not initialized"):
        bert.embedding_dim  # noqa: B018 -- the property raises until a checkpoint is loaded...
    assert can_embed(bert) and require(bert, EmbeddingPlugin) is bert  # ...and the check never evaluates it
    with pytest.raises(MissingCapabilityError, match="'Bert' .*does not provide generation: it lacks engine, kv_cache"):
        require(bert, GenerationPlugin)


def test_model_over_a_plugin_with_neither_capability_names_what_is_missing(tmp_path):
    echo = PluginManager([write_plugin(tmp_path / "echo", "Echo")], builtin_package=None).create_plugin("Echo")
    model = Model(echo)
    assert not model.can_generate and not model.is_embedding_model
    with pytest.raises(MissingCapabilityError, match="'Echo' \\(EchoPlugin\\) does not provide generation: it lacks "
                                                     "engine, tokenizer, model, kv_cache"):
        model.generate("hi")
    with pytest.raises(ValueError, match="Echo is not an embedding model"):
        model.embed(["hi"])
    with pytest.raises(ValueError, match="Echo: this model has no tokenizer"):
        model.tokenizer  # noqa: B018


def test_load_refuses_a_plugin_that_neither_generates_nor_embeds(tmp_path):
    plugins = PluginManager([write_plugin(tmp_path / "echo", "Echo", model_types=["echo"])], builtin_package=None)
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text('{"model_type": "echo"}')
    with pytest.raises(MissingCapabilityError, match="'Echo' .*lacks engine"):
        inference_pio.load(checkpoint, manager=plugins)
