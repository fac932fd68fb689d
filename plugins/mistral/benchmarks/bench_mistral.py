"""Mistral plugin on CPU: what the sliding window saves at long context, and generation against
transformers on the same random weights.

A scaled-down Mistral (4 layers, hidden 1024, 8 query / 2 KV heads of 128, vocab 32000),
float32. ``test_decode_step_at_long_context``: one decode step with 16K tokens cached, a 1024-token
window against none (the window's paged decode reads 1/16 of the keys). ``test_generate``: a
256-token prompt and 32 greedy tokens with a 128-token window, our engine against transformers'
``generate``. Read the ratios of the medians within each group.

    pytest plugins/mistral/benchmarks --benchmark-warmup=on --benchmark-group-by=group
"""

from __future__ import annotations

import pytest
import torch

from inference_pio.engine.generate import greedy
from inference_pio.plugins.mistral import Mistral_Plugin

SHAPE = dict(vocab_size=32000, hidden_size=1024, intermediate_size=3584, num_hidden_layers=4, num_attention_heads=8,
             num_key_value_heads=2, head_dim=128, max_position_embeddings=16384, rms_norm_eps=1e-5)
CONTEXT, LONG_WINDOW = 16384, 1024
PROMPT, NEW_TOKENS, WINDOW = 256, 32, 128


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(transformers model with a 128-token window, its checkpoint folder), random weights."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    hf = MistralForCausalLM(MistralConfig(**SHAPE, sliding_window=WINDOW)).eval()
    folder = tmp_path_factory.mktemp("mistral-bench")
    hf.save_pretrained(folder)
    return hf, folder


def load(folder, **overrides) -> Mistral_Plugin:
    plugin = Mistral_Plugin()
    plugin.load(model_path=folder, dtype="float32", max_batch_size=1, **overrides)
    return plugin


@pytest.mark.parametrize("window", [LONG_WINDOW, None], ids=["window_1024", "no_window"])
def test_decode_step_at_long_context(benchmark, checkpoint, window):
    _, folder = checkpoint
    plugin = load(folder, max_seq_len=CONTEXT, sliding_window=window)
    cache = plugin.kv_cache
    for layer_cache in (*cache.key_caches, *cache.value_caches):
        layer_cache.normal_()  # stands in for a 16K-token prompt's keys and values
    cache.allocate("s", CONTEXT)
    meta = cache.build_metadata(["s"], [1])
    ids, pos = torch.tensor([5]), torch.tensor([CONTEXT - 1])
    benchmark.group = f"mistral decode step, {CONTEXT} tokens cached"
    benchmark(plugin.model, ids, pos, meta, cache.key_caches, cache.value_caches)
    benchmark.extra_info.update(window=window, threads=torch.get_num_threads())


@pytest.mark.parametrize("impl", ["inference_pio", "transformers"])
def test_generate(benchmark, checkpoint, impl):
    hf, folder = checkpoint
    prompt = torch.randint(3, SHAPE["vocab_size"], (1, PROMPT), generator=torch.Generator().manual_seed(1))
    if impl == "inference_pio":
        engine = load(folder, max_seq_len=PROMPT + NEW_TOKENS).engine
        run = lambda: engine.generate(prompt.tolist(), greedy(NEW_TOKENS, ignore_eos=True))  # noqa: E731
    else:
        def run():
            with torch.no_grad():
                return hf.generate(prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                   pad_token_id=0)
    benchmark.group = f"mistral generate {PROMPT}+{NEW_TOKENS} tokens, window {WINDOW}"
    benchmark.pedantic(run, rounds=3, warmup_rounds=1) if not benchmark.disabled else run()
    benchmark.extra_info.update(impl=impl, threads=torch.get_num_threads())
    if benchmark.stats:
        benchmark.extra_info["tokens_per_s"] = round((PROMPT + NEW_TOKENS) / benchmark.stats.stats.median, 1)
