"""Phi-3 plugin: discovery from its manifest alone, routing, config.json handling and clear errors."""

from __future__ import annotations

import pytest

from inference_pio.plugin import ConfigError, PluginManager
from inference_pio.plugins.phi3 import Phi3Config, Phi3_Plugin
from tests.llama.checkpoints import assert_refused_without, hf_model, load_as_a_user, write_checkpoint

# Phi-3-mini-4k-instruct's published config.json (transformers 4.x layout).
PHI3_MINI_4K = {"architectures": ["Phi3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
                "bos_token_id": 1, "embd_pdrop": 0.0, "eos_token_id": 32000, "hidden_act": "silu",
                "hidden_size": 3072, "initializer_range": 0.02, "intermediate_size": 8192,
                "max_position_embeddings": 4096, "model_type": "phi3", "num_attention_heads": 32,
                "num_hidden_layers": 32, "num_key_value_heads": 32, "original_max_position_embeddings": 4096,
                "pad_token_id": 32000, "resid_pdrop": 0.0, "rms_norm_eps": 1e-05, "rope_scaling": None,
                "rope_theta": 10000.0, "sliding_window": 2047, "tie_word_embeddings": False,
                "torch_dtype": "bfloat16", "use_cache": True, "vocab_size": 32064}
# Phi-3-mini-128k: LongRoPE, named "su" in its first config.json ("longrope" later).
PHI3_MINI_128K = {**PHI3_MINI_4K, "max_position_embeddings": 131072, "sliding_window": 262144,
                  "rope_scaling": {"type": "su", "short_factor": [1.05] * 48, "long_factor": [1.8] * 48}}
# Phi-4-mini-instruct: 24 heads of 128, 3/4 of each head rotates, LongRoPE, tied head.
PHI4_MINI = {**PHI3_MINI_128K, "num_attention_heads": 24, "num_key_value_heads": 8, "partial_rotary_factor": 0.75,
             "vocab_size": 200064, "tie_word_embeddings": True, "bos_token_id": 199999, "eos_token_id": 199999,
             "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 48, "long_factor": [1.5] * 48}}


def test_phi3_mini_4k():
    c = Phi3Config.from_pretrained_config(PHI3_MINI_4K)
    assert (c.head_dim, c.rotary_dim, c.rope_scaling, c.max_seq_len) == (96, 96, None, 4096)
    assert c.layer_sliding_windows == (2047,) * 32
    assert not c.qkv_bias and not c.o_bias and not c.qk_norm


def test_phi3_mini_128k_su_is_longrope_with_the_top_level_original_max():
    c = Phi3Config.from_pretrained_config(PHI3_MINI_128K)
    assert c.rope_scaling["rope_type"] == "longrope" and "type" not in c.rope_scaling
    assert c.rope_scaling["original_max_position_embeddings"] == 4096
    assert c.rotary_dim == 96


def test_phi4_mini_partial_rotary():
    c = Phi3Config.from_pretrained_config(PHI4_MINI)
    assert (c.head_dim, c.rotary_dim, c.q_size, c.kv_size) == (128, 96, 3072, 1024)
    # transformers 5 keeps the factor in rope_parameters: read from there too.
    moved = {k: v for k, v in PHI4_MINI.items() if k not in ("partial_rotary_factor", "rope_scaling")}
    moved["rope_parameters"] = {**PHI4_MINI["rope_scaling"], "rope_type": "longrope", "rope_theta": 10000.0,
                                "partial_rotary_factor": 0.75, "original_max_position_embeddings": 4096}
    assert Phi3Config.from_pretrained_config(moved).rotary_dim == 96


def test_the_checkpoint_names_are_the_fused_ones():
    c = Phi3Config.from_pretrained_config(PHI3_MINI_4K)
    shapes = c.weight_layout.checkpoint_shapes(c)
    assert shapes["model.layers.0.self_attn.qkv_proj.weight"] == (3 * 3072, 3072)
    assert shapes["model.layers.31.mlp.gate_up_proj.weight"] == (2 * 8192, 3072)
    assert not any("q_proj" in name or "gate_proj" in name for name in shapes)


@pytest.mark.parametrize("config, change, message", [
    (PHI3_MINI_4K, {"hidden_act": "gelu_new"}, "hidden_act must be 'silu'"),
    (PHI3_MINI_4K, {"attention_bias": True}, "no biases"),
    (PHI3_MINI_4K, {"sliding_window": 0}, "sliding_window must be a positive int"),
    (PHI3_MINI_4K, {"rope_scaling": {"type": "linear", "factor": 2.0}}, "default RoPE or longrope"),
    (PHI4_MINI, {"partial_rotary_factor": 1.5}, r"partial_rotary_factor must be a number in \(0, 1\]"),
    (PHI3_MINI_4K, {"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "not a Phi3 checkpoint"),
])
def test_bad_configs_are_refused_by_name(config, change, message):
    with pytest.raises(ConfigError, match=message):
        Phi3Config.from_pretrained_config({**config, **change})


def test_bad_longrope_factors_are_refused_when_the_model_is_built(tmp_path):
    hf = hf_model(family="phi3", num_hidden_layers=1, pad_token_id=0, eos_token_id=0)
    folder = write_checkpoint(tmp_path, hf, tokenizer=False)
    plugin = Phi3_Plugin()
    short = {"type": "longrope", "short_factor": [1.0] * 7, "long_factor": [1.0] * 8}
    assert not plugin.initialize(model_path=folder, rope_scaling=short)
    assert "'short_factor': 8 positive numbers" in str(plugin.init_error)


def test_the_manifest_alone_makes_the_plugin_found_and_routed(tmp_path):
    manager = PluginManager()
    assert "Phi3" in [info.name for info in manager.list_plugins()]
    assert manager.families()["phi"].plugins == ("Phi3",)
    folder = write_checkpoint(tmp_path, hf_model(family="phi3", num_hidden_layers=1, pad_token_id=0, eos_token_id=0))
    assert manager.plugin_for_checkpoint(folder).name == "Phi3"
    plugin = load_as_a_user(folder, "Phi3")
    assert plugin.metadata.model_family == "Phi"
    assert plugin.model.layers[0].self_attn.qkv_proj.weight.shape == (64 + 2 * 32, 64)


def test_a_checkpoint_without_gate_up_proj_is_refused_by_name(tmp_path):
    hf = hf_model(family="phi3", num_hidden_layers=1, pad_token_id=0, eos_token_id=0)
    folder = write_checkpoint(tmp_path, hf, tokenizer=False)
    assert_refused_without(Phi3_Plugin, folder, "model.layers.0.mlp.gate_up_proj.weight")
