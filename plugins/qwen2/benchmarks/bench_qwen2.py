"""Qwen2 plugin on CPU: generation against transformers on the same random weights.

Qwen2.5-0.5B's shape (hidden 896, 14 query / 2 KV heads of 64, q/k/v biases, tied 151936-token
embeddings: the LM head alone is a quarter of the weights) with 6 of its 24 layers, float32 and
bfloat16; a 64-token prompt and 32 greedy tokens, our engine against transformers' ``generate``.
Read the ratio of the medians within each group.

    pytest plugins/qwen2/benchmarks --benchmark-warmup=on --benchmark-group-by=group
"""

from __future__ import annotations

import copy

import pytest
import torch

from inference_pio.engine.generate import greedy
from inference_pio.plugins.qwen2 import Qwen2_Plugin

QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_attention_heads=14,
                  num_key_value_heads=2, max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
LAYERS, PROMPT, NEW_TOKENS = 6, 64, 32


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(float32 transformers model, its checkpoint folder), random weights."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    hf = Qwen2ForCausalLM(Qwen2Config(**QWEN25_05B, num_hidden_layers=LAYERS)).eval()
    folder = tmp_path_factory.mktemp("qwen2-bench")
    hf.save_pretrained(folder)
    return hf, folder


@pytest.mark.parametrize("impl", ["inference_pio", "transformers"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_generate(benchmark, checkpoint, dtype, impl):
    hf, folder = checkpoint
    prompt = torch.randint(3, QWEN25_05B["vocab_size"], (1, PROMPT), generator=torch.Generator().manual_seed(1))
    if impl == "inference_pio":
        plugin = Qwen2_Plugin()
        plugin.load(model_path=folder, dtype=dtype, max_seq_len=PROMPT + NEW_TOKENS, max_batch_size=1)
        run = lambda: plugin.engine.generate(prompt.tolist(), greedy(NEW_TOKENS, ignore_eos=True))  # noqa: E731
    else:
        model = hf if dtype == "float32" else copy.deepcopy(hf).to(torch.bfloat16)

        def run():
            with torch.no_grad():
                return model.generate(prompt, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                      do_sample=False, pad_token_id=0)
    benchmark.group = f"qwen2 generate {PROMPT}+{NEW_TOKENS} tokens, Qwen2.5-0.5B shape ({LAYERS} layers), {dtype}"
    benchmark.pedantic(run, rounds=3, warmup_rounds=1) if not benchmark.disabled else run()
    benchmark.extra_info.update(impl=impl, dtype=dtype, threads=torch.get_num_threads())
    if benchmark.stats:
        benchmark.extra_info["tokens_per_s"] = round((PROMPT + NEW_TOKENS) / benchmark.stats.stats.median, 1)
