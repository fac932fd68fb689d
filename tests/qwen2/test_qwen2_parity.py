"""Our Qwen2 plugin against transformers on the same random weights (float32 and bfloat16).

q/k/v biases are drawn like the weights (non-zero), so a dropped or misplaced bias shows in the
logits; one checkpoint has Qwen's full 151936-token vocabulary, one windowed upper layers.
"""

from __future__ import annotations

import pytest
import torch

from inference_pio.plugins.qwen2 import Qwen2_Plugin
from tests.llama.checkpoints import (assert_bfloat16_parity, assert_greedy_parity, hf_logits, hf_model, load_plugin,
                                     random_tokens, teacher_forced_logits, write_checkpoint)

QWEN_ROPE = {"rope_type": "default", "rope_theta": 1000000.0}


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    """(hf_model, checkpoint folder) of a tiny Qwen2.5-like model: tied embeddings, rope theta 1e6."""
    hf = hf_model(family="qwen2", tie_word_embeddings=True, rope_parameters=QWEN_ROPE)
    return hf, write_checkpoint(tmp_path_factory.mktemp("qwen2"), hf)


CONFIGS = {
    "untied": dict(tie_word_embeddings=False),
    # Layer 0 attends to everything, layer 1 to the last 29 tokens (2-3 blocks of 16).
    "sliding_upper_layers": dict(use_sliding_window=True, sliding_window=29, max_window_layers=1),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_float32_logits_match_transformers_prefill_and_every_decode_step(tmp_path, name):
    hf = hf_model(family="qwen2", rope_parameters=QWEN_ROPE, **CONFIGS[name])
    plugin = load_plugin(Qwen2_Plugin, write_checkpoint(tmp_path, hf))
    tokens = random_tokens(110, seed=1)  # 48-token prompt in chunks of 20, then 62 decode steps
    ours = teacher_forced_logits(plugin, tokens, prompt_len=48, chunk=20)
    torch.testing.assert_close(ours, hf_logits(hf, tokens), rtol=1e-4, atol=1e-4)


def test_float32_logits_match_transformers_tied(tied):
    hf, folder = tied
    tokens = random_tokens(70, seed=2)
    ours = teacher_forced_logits(load_plugin(Qwen2_Plugin, folder), tokens, prompt_len=40)
    torch.testing.assert_close(ours, hf_logits(hf, tokens), rtol=1e-4, atol=1e-4)


def test_full_qwen_vocabulary(tmp_path):
    hf = hf_model(family="qwen2", vocab_size=151936, tie_word_embeddings=True, rope_parameters=QWEN_ROPE)
    plugin = load_plugin(Qwen2_Plugin, write_checkpoint(tmp_path, hf, tokenizer=False))
    assert plugin.model.lm_head.weight.data_ptr() == plugin.model.embed_tokens.weight.data_ptr()
    tokens = random_tokens(28, seed=4, vocab=151936)
    ours = teacher_forced_logits(plugin, tokens, prompt_len=20)
    torch.testing.assert_close(ours, hf_logits(hf, tokens), rtol=1e-4, atol=1e-4)


def test_greedy_continuation_identical_for_64_tokens(tied):
    hf, folder = tied
    assert_greedy_parity(hf, load_plugin(Qwen2_Plugin, folder), list(range(5, 41)), 64)


def test_bfloat16_logits_within_tolerance(tied):
    hf, folder = tied
    plugin = load_plugin(Qwen2_Plugin, folder, dtype="bfloat16")
    assert_bfloat16_parity(hf, plugin, random_tokens(40, seed=3), prompt_len=24)
