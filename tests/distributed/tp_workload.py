"""The tokens the tensor-parallel test feeds, and a greedy decode over a model and its KV cache."""

from __future__ import annotations

import torch

from tests.llama.checkpoints import random_tokens

PROMPT_LEN = 19
TOKENS = random_tokens(PROMPT_LEN + 12, seed=5, vocab=500)  # fits the odd 501-token vocab


def greedy(plugin, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy continuation through ``plugin.model`` (one prefill, then decode steps) on ``plugin.kv_cache``."""
    cache, model, seq = plugin.kv_cache, plugin.model, "greedy"
    cache.allocate(seq, len(prompt))
    logits = model(torch.tensor(prompt), torch.arange(len(prompt)), cache.build_metadata([seq], [len(prompt)]),
                   cache.key_caches, cache.value_caches)
    out = [int(logits[0].argmax())]
    for pos in range(len(prompt), len(prompt) + new_tokens - 1):
        cache.append_slots(seq, 1)
        logits = model(torch.tensor([out[-1]]), torch.tensor([pos]), cache.build_metadata([seq], [1]),
                       cache.key_caches, cache.value_caches)
        out.append(int(logits[0].argmax()))
    cache.free(seq)
    return out


def engine_tokens(model, cache) -> list[list[int]]:
    """Three greedy requests batched by the engine, prompts split into 8-token prefill chunks."""
    from inference_pio.engine import SamplingParams
    from inference_pio.engine.generate import GenerationEngine

    engine = GenerationEngine(model, cache, max_model_len=256, prefill_budget=8, max_num_seqs=4)
    prompts = [TOKENS[:PROMPT_LEN], TOKENS[3:9], TOKENS[:PROMPT_LEN] + TOKENS[:5]]
    done = engine.generate(prompts, SamplingParams(temperature=0, max_tokens=12, ignore_eos=True))
    return [list(s.token_ids[len(p):]) for s, p in zip(done, prompts)]
