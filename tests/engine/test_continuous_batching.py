"""Continuous batching on a tiny random Llama: late arrivals, preemption under a small KV cache,
aborts, and the asyncio engine. Greedy outputs must equal what each request gives alone."""

from __future__ import annotations

import asyncio

import pytest

import inference_pio
from inference_pio.engine import KVCacheFullError
from inference_pio.engine.async_engine import AsyncEngine
from inference_pio.engine.generate import GenerationEngine, greedy

from tests.engine.interleaved import run_interleaved
from tests.llama.checkpoints import hf_model, write_checkpoint

BLOCK = 16


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("cb"), hf_model())


@pytest.fixture(scope="module")
def model(folder):
    m = inference_pio.load(folder, dtype="float32", max_seq_len=128, kv_block_size=BLOCK, num_kv_blocks=64,
                           prefill_budget=48)
    yield m
    m.close()


def prompts(n: int, length: int = 20) -> list[list[int]]:
    return [[(7 * i + j) % 250 + 3 for j in range(length + i % 5)] for i in range(n)]


def alone(model, prompt, n) -> list[int]:
    return model.engine.generate([prompt], greedy(n, ignore_eos=True))[0].output_token_ids


def small_engine(model, num_blocks: int, **kw) -> GenerationEngine:
    """The model's weights over a separate, small KV cache."""
    from inference_pio.engine import PagedKVCache

    src = model.plugin.kv_cache
    cache = PagedKVCache(len(src.key_caches), src.key_caches[0].shape[2], src.key_caches[0].shape[3], num_blocks,
                         BLOCK, src.key_caches[0].dtype, src.device)
    return GenerationEngine(model.plugin.model, cache, max_model_len=128, tokenizer=model.plugin.tokenizer, **kw)


def test_requests_arriving_at_different_steps_equal_their_solo_runs(model):
    engine = model.engine
    ps = prompts(5)
    expected = [alone(model, p, 12) for p in ps]
    assert run_interleaved(engine, ps, 12, every=3, max_steps=200) == expected  # a new request every third step
    assert engine.stats()["running"] == 0 and model.plugin.kv_cache.usage().used_blocks == 0


def test_flood_larger_than_the_cache_all_finish_by_preemption(model):
    # 10 requests of ~20 prompt + 30 new tokens need 4 blocks each; 8 blocks hold two at a time.
    engine = small_engine(model, num_blocks=8)
    ps = prompts(10)
    seqs = engine.generate(ps, greedy(30, ignore_eos=True))
    assert [s.output_token_ids for s in seqs] == [alone(model, p, 30) for p in ps]
    assert all(s.finish_reason == "length" for s in seqs)
    assert engine.scheduler.num_preemptions > 0
    assert engine.kv_cache.usage().used_blocks == 0


def test_max_num_seqs_caps_the_running_batch(model):
    engine = small_engine(model, num_blocks=64, max_num_seqs=3)
    seen = []
    original = engine.scheduler.schedule

    def schedule():
        out = original()
        seen.append(len(engine.scheduler.running))
        return out

    engine.scheduler.schedule = schedule
    ps = prompts(7)
    seqs = engine.generate(ps, greedy(5, ignore_eos=True))
    assert max(seen) == 3
    assert [s.output_token_ids for s in seqs] == [alone(model, p, 5) for p in ps]


def test_request_larger_than_the_whole_cache_fails_alone(model):
    engine = small_engine(model, num_blocks=2)  # 32 tokens in all
    with pytest.raises(KVCacheFullError, match="the whole cache holds 32"):
        engine.generate([list(range(3, 43))], greedy(4))
    ok = engine.generate([list(range(3, 13))], greedy(4, ignore_eos=True))[0]
    assert ok.output_token_ids == alone(model, list(range(3, 13)), 4)
    assert engine.kv_cache.usage().used_blocks == 0


def test_stream_closed_early_aborts_and_frees(model):
    stream = model.stream("Hello there", max_tokens=40, temperature=0, ignore_eos=True)
    next(stream)
    assert model.plugin.kv_cache.usage().used_blocks > 0
    stream.close()
    assert model.plugin.kv_cache.usage().used_blocks == 0 and model.engine.stats()["running"] == 0


def test_async_engine_concurrent_requests_match_and_cancel_frees(folder, model):
    async def main(served):
        engine = served.async_engine()
        assert engine is served.async_engine()
        ps = prompts(8)

        async def run(p):
            ids, finish = [], None
            async for out in engine.generate(p, greedy(10, ignore_eos=True)):
                ids += out.token_ids
                finish = out.finish_reason
            return ids, finish

        results = await asyncio.gather(*(run(p) for p in ps))
        assert [r[0] for r in results] == [alone(model, p, 10) for p in ps]
        assert all(r[1] == "length" for r in results)

        gen = engine.generate(ps[0], greedy(100, ignore_eos=True))
        await gen.__anext__()
        await gen.aclose()  # the caller goes away mid-request
        for _ in range(500):
            if engine.stats()["running"] == 0 and engine.stats()["kv_blocks_used"] == 0:
                break
            await asyncio.sleep(0.01)
        assert engine.stats()["running"] == 0 and engine.stats()["kv_blocks_used"] == 0

        with pytest.raises(ValueError, match="context holds at most 128"):
            async for _ in engine.generate(list(range(3, 200)), greedy(2)):
                pass

    served = inference_pio.load(folder, dtype="float32", max_seq_len=128, kv_block_size=BLOCK, num_kv_blocks=64)
    try:
        asyncio.run(main(served))
    finally:
        served.close()


def test_async_engine_reports_request_errors(folder):
    async def main(engine):
        with pytest.raises(KVCacheFullError):
            async for _ in engine.generate(list(range(3, 43)), greedy(4)):
                pass

    served = inference_pio.load(folder, dtype="float32", max_seq_len=128, kv_block_size=BLOCK, num_kv_blocks=2)
    engine = AsyncEngine(served.engine)
    try:
        asyncio.run(main(engine))
    finally:
        engine.shutdown()
        served.close()
