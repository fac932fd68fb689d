"""The DeepSeek plugin through the plugin mechanism, its latent KV cache, and its failures."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import inference_pio
from inference_pio.engine.latent_kv_cache import LatentKVCache
from inference_pio.models.families import detect_family
from inference_pio.models.types import ModelType
from inference_pio.plugin import ConfigError, PluginManager
from inference_pio.plugins.deepseek import DeepSeek_Plugin, DeepSeekConfig
from inference_pio.plugins.deepseek.attention import kernels_support
from inference_pio.weights import WeightLoadError
from tests.llama.checkpoints import write_checkpoint

from .checkpoints import TINY, hf_deepseek


@pytest.mark.parametrize("fixture,model_type", [("v2_checkpoint", "deepseek_v2"), ("v3_checkpoint", "deepseek_v3")])
def test_manager_picks_deepseek_for_v2_and_v3(request, fixture, model_type):
    _, folder = request.getfixturevalue(fixture)
    manager = PluginManager()
    info = manager.plugin_for_checkpoint(folder)
    assert info.name == "DeepSeek"
    assert not [b for b in manager.broken_plugins() if "deepseek" in b.path.lower()]
    plugin = manager.create_plugin(info.name)
    assert isinstance(plugin, DeepSeek_Plugin)
    assert plugin.supports_config({"model_type": model_type}) and not plugin.supports_config({"model_type": "llama"})
    assert plugin.metadata.model_family == "DeepSeek"
    assert detect_family(model_type) is ModelType.DEEPSEEK


def test_kv_cache_holds_only_the_latent(v3_checkpoint):
    """Per token and layer: kv_lora_rank + qk_rope_head_dim values, not 2 x heads x head dims."""
    _, folder = v3_checkpoint
    plugin = DeepSeek_Plugin()
    plugin.load(model_path=folder, dtype="bfloat16", kv_block_size=16, max_seq_len=256, max_batch_size=2)
    cache = plugin.kv_cache
    assert isinstance(cache, LatentKVCache) and cache.value_caches is cache.key_caches
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in cache.key_caches + cache.value_caches}
    latent = TINY["kv_lora_rank"] + TINY["qk_rope_head_dim"]
    per_token = sum(storages.values()) / (cache.num_blocks * cache.block_size)
    assert per_token == TINY["num_hidden_layers"] * latent * 2  # bf16
    assert cache.bytes_per_block(cache.num_layers, 1, latent, 16, torch.bfloat16) == 16 * per_token
    expanded = TINY["num_attention_heads"] * (TINY["qk_nope_head_dim"] + TINY["qk_rope_head_dim"] + TINY["v_head_dim"])
    assert per_token < TINY["num_hidden_layers"] * expanded * 2
    assert cache.num_blocks == 2 * 256 // 16  # max_batch_size sequences of max_seq_len


def test_interface_methods(v2_checkpoint):
    hf, folder = v2_checkpoint
    plugin = DeepSeek_Plugin()
    assert plugin.initialize(model_path=str(folder), dtype="float32", max_seq_len=128) and plugin.is_loaded
    ids = plugin.tokenize("Hello world")
    assert plugin.detokenize(ids) == "Hello world"
    with torch.no_grad():
        expected = hf(torch.tensor([ids])).logits[0, -1]
    torch.testing.assert_close(plugin.infer(ids), expected, rtol=1e-4, atol=1e-4)
    assert plugin.kv_cache.usage().used_blocks == 0
    assert len(plugin.tokenize(plugin.generate_text("Hello", max_new_tokens=4, temperature=0.0, ignore_eos=True))) > 0
    assert plugin.cleanup() and plugin.model is None


def test_inference_pio_load_generates(v3_checkpoint):
    _, folder = v3_checkpoint
    model = inference_pio.load(folder, dtype="float32", max_seq_len=64)
    try:
        [result] = model.generate([5, 6, 7, 8], max_tokens=6, temperature=0.0, ignore_eos=True)
        assert len(result.token_ids) == 6 and result.finish_reason == "length"
    finally:
        model.close()


def test_moe_layer_freq_and_first_dense_layers():
    cfg = DeepSeekConfig.from_pretrained_config({**TINY, "model_type": "deepseek_v2", "num_hidden_layers": 6,
                                                 "first_k_dense_replace": 1, "moe_layer_freq": 2})
    assert [cfg.is_moe_layer(i) for i in range(6)] == [False, False, True, False, True, False]
    dense = DeepSeekConfig.from_pretrained_config({**TINY, "model_type": "deepseek_v2", "n_routed_experts": None})
    assert not any(dense.is_moe_layer(i) for i in range(3))


@pytest.mark.parametrize("edit,message", [
    ({"model_type": "llama"}, "not a DeepSeek-V2/V3 checkpoint"),
    ({"quantization_config": {"quant_method": "fp8"}}, "quantized checkpoints .*'fp8'"),
    ({"hidden_act": "gelu"}, "hidden_act must be 'silu'"),
    ({"topk_method": "noaux_tc"}, "topk_method must be one of greedy, group_limited_greedy"),
    ({"scoring_func": "sigmoid"}, "scoring_func must be 'softmax' for deepseek_v2"),
    ({"topk_method": "group_limited_greedy", "n_group": 3, "topk_group": 1}, "multiple of n_group"),
    ({"num_experts_per_tok": 9}, r"num_experts_per_tok must be in \[1, n_routed_experts=8\]"),
])
def test_bad_config_is_named(edit, message):
    with pytest.raises(ConfigError, match=message):
        DeepSeekConfig.from_pretrained_config({**TINY, "model_type": "deepseek_v2", **edit})


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("small"), hf_deepseek(3, num_hidden_layers=2), tokenizer=False)


def _rewrite_weights(src, dst, edit):
    dst.mkdir()
    (dst / "config.json").write_bytes((src / "config.json").read_bytes())
    state = load_file(src / "model.safetensors")
    edit(state)
    save_file(state, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def test_missing_expert_weight_is_named(small_folder, tmp_path):
    name = "model.layers.1.mlp.experts.5.up_proj.weight"
    bad = _rewrite_weights(small_folder, tmp_path / "bad", lambda s: s.pop(name))
    with pytest.raises(WeightLoadError, match=f"missing: {name}"):
        inference_pio.load(bad, dtype="float32")


def test_unexpected_weight_is_named(small_folder, tmp_path):
    def add(s):
        s["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(4, 4)
    bad = _rewrite_weights(small_folder, tmp_path / "bad", add)
    with pytest.raises(WeightLoadError, match="unexpected: model.layers.0.self_attn.q_proj.weight"):
        inference_pio.load(bad, dtype="float32")


def test_multi_token_prediction_layers_are_skipped(small_folder, tmp_path):
    """DeepSeek-V3 checkpoints carry an MTP module as layer num_hidden_layers; generation does not use it."""
    def add_mtp(s):
        s["model.layers.2.eh_proj.weight"] = torch.zeros(64, 128)
        s["model.layers.2.mlp.experts.0.up_proj.weight"] = torch.zeros(32, 64)
    folder = _rewrite_weights(small_folder, tmp_path / "mtp", add_mtp)
    plugin = DeepSeek_Plugin()
    plugin.load(model_path=folder, dtype="float32", max_seq_len=64)
    reference = DeepSeek_Plugin()
    reference.load(model_path=small_folder, dtype="float32", max_seq_len=64)
    torch.testing.assert_close(plugin.infer([1, 2, 3]), reference.infer([1, 2, 3]), rtol=0, atol=0)


def test_config_json_rope_scaling_of_the_original_checkpoints():
    """DeepSeek-V2's own config.json: legacy ``rope_scaling`` with ``type: yarn``."""
    cfg = DeepSeekConfig.from_pretrained_config({
        **TINY, "model_type": "deepseek_v2", "rope_theta": 10000,
        "rope_scaling": {"type": "yarn", "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707,
                         "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1}})
    mscale = 0.1 * 0.707 * torch.log(torch.tensor(40.0)).item() + 1.0
    assert cfg.softmax_scale == pytest.approx((16 + 16) ** -0.5 * mscale ** 2)
    assert cfg.rope_scaling["type"] == "yarn" and cfg.rope_theta == 10000.0  # kept for the rotary cache


def test_deepseek_v2_lite_config_json():
    """The shape of DeepSeek-V2-Lite's own config.json (keys transformers does not know included)."""
    cfg = DeepSeekConfig.from_pretrained_config({
        "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2", "torch_dtype": "bfloat16",
        "vocab_size": 102400, "hidden_size": 2048, "intermediate_size": 10944, "moe_intermediate_size": 1408,
        "num_hidden_layers": 27, "num_attention_heads": 16, "num_key_value_heads": 16, "q_lora_rank": None,
        "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
        "n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6, "topk_method": "greedy",
        "scoring_func": "softmax", "norm_topk_prob": False, "routed_scaling_factor": 1.0, "moe_layer_freq": 1,
        "first_k_dense_replace": 1, "aux_loss_alpha": 0.001, "seq_aux": True, "max_position_embeddings": 163840,
        "rope_theta": 10000, "rope_scaling": {"type": "yarn", "factor": 40, "mscale": 0.707, "mscale_all_dim": 0.707,
                                              "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1},
        "rms_norm_eps": 1e-06, "bos_token_id": 100000, "eos_token_id": 100001, "tie_word_embeddings": False})
    assert cfg.dtype == "bfloat16" and cfg.q_lora_rank is None and cfg.latent_dim == 576
    assert [cfg.is_moe_layer(i) for i in (0, 1, 26)] == [False, True, True]
    assert cfg.eos_token_ids == (100001,) and not cfg.rope_is_neox
    assert not kernels_support(cfg.latent_dim)  # 576-dim rows: the torch attention path


def test_gguf_file_is_refused_with_a_clear_error(tmp_path):
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(path), "deepseek2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    plugin = DeepSeek_Plugin()
    assert plugin.initialize(model_path=str(path)) is False
    assert isinstance(plugin.init_error, ConfigError) and "GGUF" in str(plugin.init_error)


def test_integer_norm_weight_is_refused_by_name(v2_checkpoint, tmp_path):
    bad = shutil.copytree(v2_checkpoint[1], tmp_path / "bad")
    [shard] = sorted(bad.glob("*.safetensors"))
    state = load_file(shard)
    state["model.norm.weight"] = state["model.norm.weight"].to(torch.int32)
    save_file(state, shard, metadata={"format": "pt"})
    with pytest.raises(WeightLoadError, match=r"floating point have another dtype: model.norm.weight \(I32\)"):
        inference_pio.load(bad, max_seq_len=64, max_batch_size=1)
