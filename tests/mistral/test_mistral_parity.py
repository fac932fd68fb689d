"""Our Mistral plugin against transformers on the same random weights, sliding window included.

The window (37) is shorter than prompt + generated tokens and not a multiple of the KV block size
(16), so prefill, chunked prefill and decode all read windows that start mid-block and span
several blocks.
"""

from __future__ import annotations

import copy

import pytest
import torch

from inference_pio.engine.generate import greedy
from inference_pio.plugins.mistral import Mistral_Plugin
from tests.llama.checkpoints import (assert_bfloat16_parity, assert_greedy_parity, hf_greedy, hf_logits, hf_model,
                                     load_plugin, random_tokens, teacher_forced_logits, write_checkpoint)

WINDOW = 37


@pytest.fixture(scope="module")
def windowed(tmp_path_factory):
    """(hf_model, checkpoint folder) of a tiny Mistral with a 37-token window."""
    hf = hf_model(family="mistral", sliding_window=WINDOW)
    return hf, write_checkpoint(tmp_path_factory.mktemp("mistral"), hf)


def test_the_window_changes_transformers_logits(windowed):
    """Guards the parity tests below: past the window, a windowed model must differ from a full one."""
    hf, _ = windowed
    full = copy.deepcopy(hf)
    full.config.sliding_window = None
    tokens = random_tokens(80, seed=1)
    windowed_logits, full_logits = hf_logits(hf, tokens), hf_logits(full, tokens)
    torch.testing.assert_close(windowed_logits[:WINDOW], full_logits[:WINDOW], rtol=1e-5, atol=1e-5)
    assert (windowed_logits[WINDOW:] - full_logits[WINDOW:]).abs().amax(dim=-1).min() > 1e-2


@pytest.mark.parametrize("chunk", [None, 20], ids=["one_prefill", "chunked_prefill"])
def test_float32_logits_match_transformers_past_the_window(windowed, chunk):
    hf, folder = windowed
    tokens = random_tokens(110, seed=1)  # 48-token prompt > window, then 62 decode steps
    ours = teacher_forced_logits(load_plugin(Mistral_Plugin, folder), tokens, prompt_len=48, chunk=chunk)
    torch.testing.assert_close(ours, hf_logits(hf, tokens), rtol=1e-4, atol=1e-4)


def test_float32_logits_match_transformers_without_a_window(tmp_path):
    hf = hf_model(family="mistral", sliding_window=None, tie_word_embeddings=True, head_dim=32)
    tokens = random_tokens(70, seed=2)
    ours = teacher_forced_logits(load_plugin(Mistral_Plugin, write_checkpoint(tmp_path, hf)), tokens, prompt_len=40)
    torch.testing.assert_close(ours, hf_logits(hf, tokens), rtol=1e-4, atol=1e-4)


def test_greedy_continuation_identical_for_64_tokens(windowed):
    hf, folder = windowed
    # 36-token prompt + 64 = 100 tokens: the window slides over the last 63 steps.
    assert_greedy_parity(hf, load_plugin(Mistral_Plugin, folder), list(range(5, 41)), 64)


def test_batched_decode_gives_each_sequence_its_own_greedy_tokens(windowed):
    """Two prompts of different lengths decode in one batch, each window sliding at its own offset."""
    hf, folder = windowed
    prompts = [random_tokens(30, seed=5), random_tokens(45, seed=6)]
    seqs = load_plugin(Mistral_Plugin, folder).engine.generate(prompts, greedy(40, ignore_eos=True))
    assert [s.output_token_ids for s in seqs] == [hf_greedy(hf, p, 40) for p in prompts]


def test_bfloat16_logits_within_tolerance(windowed):
    hf, folder = windowed
    plugin = load_plugin(Mistral_Plugin, folder, dtype="bfloat16")
    assert_bfloat16_parity(hf, plugin, random_tokens(64, seed=3), prompt_len=44)
