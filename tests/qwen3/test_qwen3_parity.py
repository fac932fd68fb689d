"""Our Qwen3 plugin against transformers' Qwen3ForCausalLM on the same random weights.

The q/k norm weights are drawn away from 1 (like every norm here), so a skipped norm, one applied
after RoPE or to the wrong heads shows in the logits. head_dim is set apart from hidden / heads,
as in the released Qwen3 models. Decode steps go through the fused C++ step (checked).
"""

from __future__ import annotations

import pytest
import torch

from inference_pio.layers.fused_decode import fused_decoder_of
from inference_pio.plugins.qwen3 import Qwen3_Plugin
from tests.llama.checkpoints import (assert_bfloat16_parity, assert_greedy_parity, hf_logits, hf_model, load_plugin,
                                     random_tokens, teacher_forced_logits, write_checkpoint)

QWEN3 = dict(family="qwen3", head_dim=32, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
CONFIGS = {
    "tied": dict(tie_word_embeddings=True),
    "untied": dict(tie_word_embeddings=False),
    # Layer 1 attends to the last 29 tokens only (2-3 blocks of 16).
    "sliding_upper_layer": dict(tie_word_embeddings=False, use_sliding_window=True, sliding_window=29,
                                max_window_layers=1),
}


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    hf = hf_model(**QWEN3, **CONFIGS["tied"])
    return hf, write_checkpoint(tmp_path_factory.mktemp("qwen3"), hf)


@pytest.mark.parametrize("name", CONFIGS)
def test_float32_logits_match_transformers_prefill_and_every_decode_step(tmp_path, name):
    hf = hf_model(**QWEN3, **CONFIGS[name])
    plugin = load_plugin(Qwen3_Plugin, write_checkpoint(tmp_path, hf))
    assert plugin.model.layers[0].self_attn.q_norm is not None
    tied = plugin.model.lm_head.weight.data_ptr() == plugin.model.embed_tokens.weight.data_ptr()
    assert tied == CONFIGS[name]["tie_word_embeddings"]
    tokens = random_tokens(110, seed=1)  # 48-token prompt in chunks of 20, then 62 decode steps
    ours = teacher_forced_logits(plugin, tokens, prompt_len=48, chunk=20)
    torch.testing.assert_close(ours, hf_logits(hf, tokens), rtol=1e-4, atol=1e-4)
    assert fused_decoder_of(plugin.model) is not None, "decode steps did not run the fused C++ step"


def test_greedy_continuation_identical_for_64_tokens(tied):
    hf, folder = tied
    plugin = load_plugin(Qwen3_Plugin, folder)
    assert_greedy_parity(hf, plugin, list(range(5, 41)), 64)
    assert fused_decoder_of(plugin.model) is not None


def test_bfloat16_logits_within_tolerance(tied):
    hf, folder = tied
    plugin = load_plugin(Qwen3_Plugin, folder, dtype="bfloat16")
    assert_bfloat16_parity(hf, plugin, random_tokens(40, seed=3), prompt_len=24)
    assert fused_decoder_of(plugin.model) is not None


def test_the_qk_norms_matter(tied):
    """With the q/k norm weights reset to ones the logits move: the parity above tests the norms."""
    hf, folder = tied
    plugin = load_plugin(Qwen3_Plugin, folder)
    for layer in plugin.model.layers:
        layer.self_attn.q_norm.weight.fill_(1.0)
    tokens = random_tokens(30, seed=5)
    ours = teacher_forced_logits(plugin, tokens, prompt_len=20)
    assert not torch.allclose(ours, hf_logits(hf, tokens), rtol=1e-2, atol=1e-2)
