"""Qwen2 plugin: discovery, routing, config.json handling and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import inference_pio
from inference_pio.plugin import ConfigError, PluginManager
from inference_pio.plugins.qwen2 import Qwen2Config, Qwen2_Plugin
from tests.llama.checkpoints import assert_refused_without, hf_model, load_as_a_user, write_checkpoint

# Qwen2.5-0.5B-Instruct's published config.json (transformers 4.x layout: top-level rope_theta).
QWEN25_05B = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "bos_token_id": 151643,
              "eos_token_id": 151645, "hidden_size": 896, "intermediate_size": 4864,
              "max_position_embeddings": 32768, "max_window_layers": 21, "num_attention_heads": 14,
              "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
              "sliding_window": 32768, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
              "use_sliding_window": False, "vocab_size": 151936}


def test_published_config():
    c = Qwen2Config.from_pretrained_config(QWEN25_05B)
    assert (c.head_dim, c.num_key_value_heads, c.rope_theta, c.vocab_size) == (64, 2, 1000000.0, 151936)
    assert c.tie_word_embeddings and c.family == "Qwen"
    assert c.layer_sliding_windows == (None,) * 24  # use_sliding_window is false: sliding_window is ignored
    windowed = Qwen2Config.from_pretrained_config({**QWEN25_05B, "use_sliding_window": True, "sliding_window": 4096})
    assert windowed.layer_sliding_windows == (None,) * 21 + (4096,) * 3


@pytest.mark.parametrize("change, message", [
    ({"attention_bias": True}, "q/k/v only"),
    ({"layer_types": ["full_attention"] * 3}, "layer_types must list 24"),
    ({"layer_types": ["sliding_attention"] * 24}, "no sliding_window"),
    ({"use_sliding_window": True, "sliding_window": None}, "sliding_window must be a positive int"),
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "not a Qwen2 checkpoint"),
])
def test_bad_configs_are_refused_by_name(change, message):
    with pytest.raises(ConfigError, match=message):
        Qwen2Config.from_pretrained_config({**QWEN25_05B, **change})


def test_manager_routes_a_qwen2_checkpoint_to_this_plugin(tmp_path):
    folder = write_checkpoint(tmp_path, hf_model(family="qwen2", num_hidden_layers=1))
    assert PluginManager().plugin_for_checkpoint(folder).name == "Qwen2"
    plugin = load_as_a_user(folder, "Qwen2")
    assert plugin.metadata.model_family == "Qwen"
    attn = plugin.model.layers[0].self_attn
    assert attn.qkv_proj.bias.shape == (64 + 2 * 32,) and attn.o_proj.bias is None


def test_a_checkpoint_without_qkv_biases_is_refused_by_name(tmp_path):
    folder = write_checkpoint(tmp_path, hf_model(family="qwen2", num_hidden_layers=1), tokenizer=False)
    assert_refused_without(Qwen2_Plugin, folder, "model.layers.0.self_attn.k_proj.bias")


def test_a_qwen2_gguf_is_refused_by_name(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "qwen2.gguf"
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ConfigError, match="GGUF architecture 'qwen2' is not supported by Qwen2Config"):
        inference_pio.load(path)
