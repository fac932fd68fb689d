"""Our Llama plugin against transformers on the same random weights (float32 and bfloat16)."""

from __future__ import annotations

import pytest
import torch

from inference_pio.plugins.llama import Llama_Plugin

from . import checkpoints
from .checkpoints import (assert_bfloat16_parity, assert_greedy_parity, hf_model, random_tokens, teacher_forced_logits,
                          write_checkpoint)


def load_plugin(folder, dtype="float32", **kw) -> Llama_Plugin:
    return checkpoints.load_plugin(Llama_Plugin, folder, dtype, **kw)


CONFIGS = {
    "gqa": {},
    "mha_tied": dict(num_key_value_heads=4, tie_word_embeddings=True),
    "llama3_rope": dict(rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                         "original_max_position_embeddings": 64}),
    "linear_rope_deepseek": dict(rope_parameters={"rope_type": "linear", "rope_theta": 100000.0, "factor": 4.0}),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_float32_logits_match_transformers_prefill_and_every_decode_step(tmp_path, name):
    hf = hf_model(**CONFIGS[name])
    plugin = load_plugin(write_checkpoint(tmp_path, hf))
    torch.manual_seed(1)
    tokens = torch.randint(1, 512, (70,)).tolist()  # 40-token prompt spans 3 KV blocks, 30 decode steps
    with torch.no_grad():
        expected = hf(torch.tensor([tokens])).logits[0]
    ours = teacher_forced_logits(plugin, tokens, prompt_len=40)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_greedy_continuation_identical_for_64_tokens(gqa_checkpoint):
    hf, folder = gqa_checkpoint
    assert_greedy_parity(hf, load_plugin(folder), list(range(5, 41)), 64)  # 36-token prompt: 3 blocks


def test_bfloat16_logits_within_tolerance(gqa_checkpoint):
    hf, folder = gqa_checkpoint
    assert_bfloat16_parity(hf, load_plugin(folder, dtype="bfloat16"), random_tokens(40, seed=2), prompt_len=24)


def test_sharded_checkpoint_loads_the_same_weights(tmp_path, gqa_checkpoint):
    hf, folder = gqa_checkpoint
    sharded = write_checkpoint(tmp_path / "sharded", hf, max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    a, b = load_plugin(folder), load_plugin(sharded)
    for (name, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(pa, pb), name
    assert a.model.layers[0].self_attn.qkv_proj.weight.shape == (64 + 2 * 32, 64)  # q, k, v rows fused


def test_deepseek_family_reported_from_config_name(tmp_path):
    hf = hf_model(num_hidden_layers=1)
    by_name = write_checkpoint(tmp_path / "a", hf, name_or_path="deepseek-ai/deepseek-coder-1.3b-base")
    assert load_plugin(by_name).metadata.model_family == "DeepSeek"
    assert load_plugin(write_checkpoint(tmp_path / "deepseek-coder-1.3b", hf)).metadata.model_family == "DeepSeek"
    assert load_plugin(write_checkpoint(tmp_path / "b", hf)).metadata.model_family == "Llama"
