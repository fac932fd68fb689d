"""Mistral plugin: discovery, routing, config.json handling and clear errors."""

from __future__ import annotations

import pytest

from inference_pio.plugin import ConfigError, PluginManager
from inference_pio.plugins.mistral import MistralConfig, Mistral_Plugin
from tests.llama.checkpoints import hf_model, load_as_a_user, write_checkpoint

# Published config.json values (weights not needed): v0.1 slides a 4096 window, v0.3 has none.
MISTRAL_7B_V01 = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": 4096,
                  "intermediate_size": 14336, "num_attention_heads": 32, "num_hidden_layers": 32,
                  "num_key_value_heads": 8, "max_position_embeddings": 32768, "rms_norm_eps": 1e-05,
                  "rope_theta": 10000.0, "sliding_window": 4096, "vocab_size": 32000, "torch_dtype": "bfloat16"}
MISTRAL_7B_V03 = {**MISTRAL_7B_V01, "rope_theta": 1000000.0, "sliding_window": None, "vocab_size": 32768}


def test_published_configs():
    v1, v3 = MistralConfig.from_pretrained_config(MISTRAL_7B_V01), MistralConfig.from_pretrained_config(MISTRAL_7B_V03)
    assert (v1.head_dim, v1.num_key_value_heads, v1.dtype) == (128, 8, "bfloat16")
    assert v1.layer_sliding_windows == (4096,) * 32 and v3.layer_sliding_windows == (None,) * 32
    assert (v1.rope_theta, v3.rope_theta) == (10000.0, 1000000.0)
    assert v1.family == "Mistral"


def test_manager_routes_a_mistral_checkpoint_to_this_plugin(tmp_path):
    folder = write_checkpoint(tmp_path, hf_model(family="mistral", sliding_window=20, num_hidden_layers=1))
    assert PluginManager().plugin_for_checkpoint(folder).name == "Mistral"
    plugin = load_as_a_user(folder, "Mistral")
    assert plugin.metadata.model_family == "Mistral"
    assert [layer.self_attn.attn.sliding_window for layer in plugin.model.layers] == [20]
    assert plugin.infer([5, 6, 7]).shape == (512,)


def test_a_llama_checkpoint_is_refused_by_name(tmp_path):
    folder = write_checkpoint(tmp_path, hf_model(num_hidden_layers=1), tokenizer=False)
    plugin = Mistral_Plugin()
    assert not plugin.initialize(model_path=folder)
    assert isinstance(plugin.init_error, ConfigError) and "not a Mistral checkpoint" in str(plugin.init_error)


def test_a_non_positive_window_is_refused():
    with pytest.raises(ConfigError, match="sliding_window"):
        MistralConfig.from_pretrained_config({**MISTRAL_7B_V01, "sliding_window": 0})
