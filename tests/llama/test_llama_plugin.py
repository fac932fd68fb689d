"""The Llama plugin through the plugin mechanism: discovery, the interface methods, failure by value."""

from __future__ import annotations

import torch

from inference_pio.engine import SamplingParams
from inference_pio.plugin import PluginManager
from inference_pio.plugins.llama import Llama_Plugin
from inference_pio.weights import WeightLoadError


def test_manager_discovers_llama_and_picks_it_for_the_checkpoint(gqa_checkpoint):
    _, folder = gqa_checkpoint
    manager = PluginManager()
    info = manager.plugin_for_checkpoint(folder)
    assert info.name == "Llama"
    assert not [b for b in manager.broken_plugins() if "llama" in b.path.lower()]
    plugin = manager.create_plugin(info.name)
    assert isinstance(plugin, Llama_Plugin)
    assert plugin.supports_config({"model_type": "llama"}) and not plugin.supports_config({"model_type": "gpt2"})


def test_interface_methods(gqa_checkpoint):
    hf, folder = gqa_checkpoint
    plugin = Llama_Plugin()
    assert plugin.initialize(model_path=str(folder), dtype="float32") and plugin.is_loaded
    assert plugin.load_model() is plugin.model
    ids = plugin.tokenize("Hello world")
    assert plugin.detokenize(ids) == "Hello world"
    with torch.no_grad():
        expected = hf(torch.tensor([ids])).logits[0, -1]
    torch.testing.assert_close(plugin.infer(ids), expected, rtol=1e-4, atol=1e-4)
    assert plugin.kv_cache.usage().used_blocks == 0  # infer frees its blocks
    text = plugin.generate_text("Hello world", max_new_tokens=5, temperature=0.0, ignore_eos=True)
    [seq] = plugin.engine.generate([ids], SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True))
    assert text == plugin.detokenize(seq.output_token_ids) and len(seq.output_token_ids) == 5
    assert plugin.cleanup() and not plugin.is_loaded and plugin.model is None


def test_initialize_reports_failure_by_value(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,'
                                          ' "intermediate_size": 128, "num_hidden_layers": 1, "vocab_size": 100}')
    plugin = Llama_Plugin()
    assert plugin.initialize(model_path=str(tmp_path)) is False
    assert isinstance(plugin.init_error, WeightLoadError) and not plugin.is_loaded
