"""Our Llama plugin against transformers on the same random weights (float32 and bfloat16)."""

from __future__ import annotations

import copy

import pytest
import torch

from inference_pio.engine.generate import greedy
from inference_pio.plugins.llama import Llama_Plugin

from .checkpoints import hf_greedy, hf_model, teacher_forced_logits, write_checkpoint

BLOCK = 16
BF16_TOL = dict(rtol=0.05, atol=0.2)  # bf16 keeps 8 mantissa bits; logits here are O(1-10)


def load_plugin(folder, dtype="float32", **kw) -> Llama_Plugin:
    plugin = Llama_Plugin()
    plugin.load(model_path=folder, dtype=dtype, kv_block_size=BLOCK, max_seq_len=256, max_batch_size=4, **kw)
    return plugin


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
    plugin = load_plugin(folder)
    prompt = list(range(5, 41))  # 36 tokens: 3 blocks
    expected = hf_greedy(hf, prompt, 64)
    [seq] = plugin.engine.generate([prompt], greedy(64, ignore_eos=True))
    assert seq.output_token_ids == expected
    assert seq.finish_reason == "length"


def test_bfloat16_logits_within_tolerance(gqa_checkpoint):
    hf, folder = gqa_checkpoint
    plugin = load_plugin(folder, dtype="bfloat16")
    torch.manual_seed(2)
    tokens = torch.randint(1, 512, (40,)).tolist()
    with torch.no_grad():
        expected = copy.deepcopy(hf).to(torch.bfloat16)(torch.tensor([tokens])).logits[0].float()
        exact = hf(torch.tensor([tokens])).logits[0]
    ours = teacher_forced_logits(plugin, tokens, prompt_len=24)
    torch.testing.assert_close(ours, expected, **BF16_TOL)
    # Our bf16 error against the float32 model is no worse than transformers' own bf16 error.
    assert (ours - exact).abs().max() <= 1.25 * (expected - exact).abs().max()


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
