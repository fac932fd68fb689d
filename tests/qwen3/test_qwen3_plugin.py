"""Qwen3 plugin: discovery from its manifest alone, routing, config.json handling and clear errors."""

from __future__ import annotations

import pytest

from inference_pio.plugin import ConfigError, PluginManager
from inference_pio.plugins.qwen3 import Qwen3Config, Qwen3_Plugin
from tests.llama.checkpoints import assert_refused_without, hf_model, load_as_a_user, write_checkpoint

# Qwen3-0.6B's published config.json (transformers 4.x layout: top-level rope_theta).
QWEN3_06B = {"architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
             "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
             "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
             "max_position_embeddings": 40960, "max_window_layers": 28, "model_type": "qwen3",
             "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
             "rope_scaling": None, "rope_theta": 1000000, "sliding_window": None, "tie_word_embeddings": True,
             "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": True,
             "use_sliding_window": False, "vocab_size": 151936}


def test_published_config():
    c = Qwen3Config.from_pretrained_config(QWEN3_06B)
    # head_dim 128 is its own key: 16 heads x 128 = 2048 query rows from a 1024-wide hidden state.
    assert (c.head_dim, c.q_size, c.kv_size, c.rotary_dim) == (128, 2048, 1024, 128)
    assert (c.rope_theta, c.rope_scaling, c.vocab_size, c.tie_word_embeddings) == (1000000.0, None, 151936, True)
    assert c.qk_norm and not c.qkv_bias and not c.o_bias
    assert c.layer_sliding_windows == (None,) * 28
    windowed = Qwen3Config.from_pretrained_config({**QWEN3_06B, "use_sliding_window": True, "sliding_window": 4096,
                                                   "max_window_layers": 26})
    assert windowed.layer_sliding_windows == (None,) * 26 + (4096,) * 2


def test_the_checkpoint_names_include_the_head_norms():
    config = Qwen3Config.from_pretrained_config(QWEN3_06B)
    shapes = config.weight_layout.checkpoint_shapes(config)
    assert shapes["model.layers.27.self_attn.q_norm.weight"] == (128,)
    assert shapes["model.layers.0.self_attn.k_norm.weight"] == (128,)
    assert "model.layers.0.self_attn.q_proj.bias" not in shapes


@pytest.mark.parametrize("change, message", [
    ({"hidden_act": "gelu"}, "hidden_act must be 'silu'"),
    ({"layer_types": ["full_attention"] * 3}, "layer_types must list 28"),
    ({"layer_types": ["sliding_attention"] * 28}, "no positive sliding_window"),
    ({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}, "not a Qwen3 checkpoint"),
])
def test_bad_configs_are_refused_by_name(change, message):
    with pytest.raises(ConfigError, match=message):
        Qwen3Config.from_pretrained_config({**QWEN3_06B, **change})


def test_the_manifest_alone_makes_the_plugin_found_and_routed(tmp_path):
    manager = PluginManager()
    assert "Qwen3" in [info.name for info in manager.list_plugins()]
    assert "Qwen3" in manager.families()["qwen"].plugins  # a second plugin of the Qwen family
    folder = write_checkpoint(tmp_path, hf_model(family="qwen3", num_hidden_layers=1, head_dim=32))
    assert manager.plugin_for_checkpoint(folder).name == "Qwen3"
    plugin = load_as_a_user(folder, "Qwen3")
    assert plugin.metadata.model_family == "Qwen"
    attn = plugin.model.layers[0].self_attn
    assert attn.q_norm.weight.shape == (32,) and attn.qkv_proj.bias is None


def test_a_checkpoint_without_a_k_norm_is_refused_by_name(tmp_path):
    folder = write_checkpoint(tmp_path, hf_model(family="qwen3", num_hidden_layers=1, head_dim=32), tokenizer=False)
    assert_refused_without(Qwen3_Plugin, folder, "model.layers.0.self_attn.k_norm.weight")
