"""Our Phi-3 plugin against transformers' Phi3ForCausalLM on the same random weights.

The checkpoints are transformers' own ``save_pretrained`` output: ``self_attn.qkv_proj`` and
``mlp.gate_up_proj`` stored fused, read as they are. Configurations: Phi-3-mini-4k-like (default
RoPE, a sliding window over every layer), Phi-3-128k-like LongRoPE, and Phi-4-mini-like partial
rotary (0.75) with LongRoPE and a tied head. Decode steps go through the fused C++ step (checked).

LongRoPE switches from the short to the long factors at ``original_max_position_embeddings``.
transformers picks one set per forward by its largest position, so a whole-sequence forward past
that length is not what an incremental decoder computes (transformers' generate recomputes the
sequence there); the reference for decode steps past it is transformers run incrementally with
its own cache, each step rotating the new token with the factors of its position, as ours does.
"""

from __future__ import annotations

import pytest
import torch

from inference_pio.layers.fused_decode import fused_decoder_of
from inference_pio.plugins.phi3 import Phi3_Plugin
from tests.llama.checkpoints import (assert_bfloat16_parity, assert_greedy_parity, hf_logits, hf_model, load_plugin,
                                     random_tokens, teacher_forced_logits, write_checkpoint)

ORIGINAL_MAX = 64


def longrope(rotary_dim: int, original_max: int = ORIGINAL_MAX, **extra) -> dict:
    g = torch.Generator().manual_seed(rotary_dim)
    short, long = (1 + 3 * torch.rand(2, rotary_dim // 2, generator=g)).tolist()
    return {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": short, "long_factor": long,
            "original_max_position_embeddings": original_max, **extra}


CONFIGS = {
    # head_dim 16; every layer attends to its last 29 tokens (transformers' Phi-3-mini has 2047).
    "mini_4k_sliding": dict(sliding_window=29, original_max_position_embeddings=256),
    # all 16 dims rotate; the short factors up to position 63, long ones from 64 on.
    "longrope": dict(rope_parameters=longrope(16), original_max_position_embeddings=ORIGINAL_MAX),
    # head_dim 32 (2 heads, 1 kv head), 24 of its 32 dims rotate (Phi-4-mini's 0.75), tied head.
    "partial_longrope_tied": dict(num_attention_heads=2, num_key_value_heads=1,
                                  rope_parameters=longrope(24, partial_rotary_factor=0.75),
                                  original_max_position_embeddings=ORIGINAL_MAX, tie_word_embeddings=True),
}


def phi3(name: str):
    return hf_model(family="phi3", pad_token_id=0, eos_token_id=0, **CONFIGS[name])


def hf_incremental_logits(hf, tokens: list[int], prompt_len: int) -> torch.Tensor:
    """transformers' logits for a prefill of ``prompt_len`` tokens, then one decode step per token
    with its own cache (each step's RoPE from its own position)."""
    with torch.no_grad():
        out = hf(torch.tensor([tokens[:prompt_len]]), use_cache=True)
        rows, cache = [out.logits[0]], out.cache
        for pos in range(prompt_len, len(tokens)):
            out = hf(torch.tensor([[tokens[pos]]]), cache=cache, use_cache=True,
                     position_ids=torch.tensor([[pos]]))
            rows.append(out.logits[0])
            cache = out.cache
    return torch.cat(rows)


@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    hf = phi3("partial_longrope_tied")
    return hf, write_checkpoint(tmp_path_factory.mktemp("phi3"), hf)


@pytest.mark.parametrize("name", CONFIGS)
def test_float32_logits_match_transformers_prefill_and_every_decode_step(tmp_path, name):
    hf = phi3(name)
    plugin = load_plugin(Phi3_Plugin, write_checkpoint(tmp_path, hf))
    assert "model.layers.0.self_attn.qkv_proj.weight" in hf.state_dict()
    tokens = random_tokens(60, seed=1)  # 40-token prompt in chunks of 16, then 20 decode steps, all short
    ours = teacher_forced_logits(plugin, tokens, prompt_len=40, chunk=16)
    torch.testing.assert_close(ours, hf_logits(hf, tokens), rtol=1e-4, atol=1e-4)
    assert fused_decoder_of(plugin.model) is not None, "decode steps did not run the fused C++ step"


@pytest.mark.parametrize("name", ["longrope", "partial_longrope_tied"])
def test_decode_steps_past_original_max_use_the_long_factors_like_transformers(tmp_path, name):
    hf = phi3(name)
    plugin = load_plugin(Phi3_Plugin, write_checkpoint(tmp_path, hf))
    tokens = random_tokens(110, seed=2)  # a 48-token prompt, then decode steps from position 48 to 109
    ours = teacher_forced_logits(plugin, tokens, prompt_len=48)
    torch.testing.assert_close(ours, hf_incremental_logits(hf, tokens, 48), rtol=1e-4, atol=1e-4)
    assert fused_decoder_of(plugin.model) is not None
    # The long factors were used: a whole-sequence forward (long factors everywhere) differs.
    assert not torch.allclose(ours[-1], hf_logits(hf, tokens)[-1], rtol=1e-3, atol=1e-3)


def test_greedy_continuation_identical_for_64_tokens(tmp_path):
    hf = phi3("mini_4k_sliding")
    plugin = load_plugin(Phi3_Plugin, write_checkpoint(tmp_path, hf))
    assert_greedy_parity(hf, plugin, list(range(5, 41)), 64)
    assert fused_decoder_of(plugin.model) is not None


def test_greedy_continuation_identical_with_partial_rotary(partial):
    hf, folder = partial
    plugin = load_plugin(Phi3_Plugin, folder)
    prompt = list(range(5, 25))  # 20 + 40 tokens stay below original_max (transformers' generate
    assert_greedy_parity(hf, plugin, prompt, 40)  # recomputes the whole sequence past it)
    assert fused_decoder_of(plugin.model) is not None


def test_bfloat16_logits_within_tolerance(partial):
    hf, folder = partial
    plugin = load_plugin(Phi3_Plugin, folder, dtype="bfloat16")
    assert_bfloat16_parity(hf, plugin, random_tokens(40, seed=3), prompt_len=24)
    assert fused_decoder_of(plugin.model) is not None
