"""Prefix caching through the engine on tiny random models: the same tokens with caching on as off
(greedy and seeded sampling, interleaved requests, eviction and preemption under a tiny cache,
chunked prefill, multi-turn chats, a sliding window, DeepSeek's latent cache, each attention
backend on this machine), fewer prompt tokens computed, and every block free or evictable after."""

from __future__ import annotations

import pytest

import inference_pio
from inference_pio.engine import PagedKVCache, SamplingParams
from inference_pio.engine.generate import GenerationEngine, greedy
from inference_pio.ops import use_backend

from tests.engine.interleaved import run_interleaved
from tests.llama.checkpoints import hf_model, write_checkpoint

BLOCK = 8
STEM = [(11 * j) % 400 + 5 for j in range(37)]  # a shared "system prompt" of 4 full blocks + 5 tokens


def load(folder, **kw):
    return inference_pio.load(folder, dtype="float32", max_seq_len=256, kv_block_size=BLOCK, num_kv_blocks=96,
                              prefill_budget=64, **kw)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    m = load(write_checkpoint(tmp_path_factory.mktemp("pc-llama"), hf_model(), tokenizer=False))
    yield m
    m.close()


def engine(model, caching: bool, num_blocks: int = 96, **kw) -> GenerationEngine:
    """The model's weights over a fresh KV cache of its own (same layout as the model's)."""
    src = model.plugin.kv_cache
    cache = type(src)(src.num_layers, src.num_kv_heads, src.head_dim, num_blocks, BLOCK, src.dtype, src.device)
    return GenerationEngine(model.plugin.model, cache, max_model_len=256, enable_prefix_caching=caching, **kw)


def prompts(n: int) -> list[list[int]]:
    """Prompts that share STEM, or part of it, and end differently; one is STEM cut at a block edge."""
    out = [STEM + [(7 * i + j) % 300 + 50 for j in range(3 + 2 * i)] for i in range(n)]
    out[1] = STEM[:2 * BLOCK]  # the whole prompt is cached blocks: its last block is computed again
    return out


def sequential(eng: GenerationEngine, ps, params) -> list[list[int]]:
    """One request after another, so each can reuse what the ones before it cached."""
    return [eng.generate([p], params)[0].output_token_ids for p in ps]


def assert_all_blocks_free(eng: GenerationEngine) -> None:
    usage = eng.kv_cache.usage()
    assert usage.used_blocks == 0 and usage.free_blocks == usage.num_blocks and usage.num_seqs == 0
    assert not eng.scheduler.running and not eng.scheduler.waiting


def computed_prompt_tokens(eng: GenerationEngine) -> int:
    stats = eng.stats()
    return stats["prefix_cache_queries"] - stats["prefix_cache_hits"]


@pytest.mark.parametrize("backend", [None, "reference"])
def test_greedy_outputs_equal_with_and_without_caching(llama, backend):
    ps = prompts(5 if backend is None else 3)
    ps.append(ps[0])  # the last one repeats the first exactly
    with use_backend(backend):
        on, off = engine(llama, True), engine(llama, False)
        got = sequential(on, ps, greedy(10, ignore_eos=True))
        want = sequential(off, ps, greedy(10, ignore_eos=True))
    assert got == want
    stats = on.stats()
    # every prompt after the first finds at least the stem's first two blocks
    assert stats["prefix_cache_hits"] >= 2 * BLOCK * (len(ps) - 1)
    assert stats["prefix_cache_queries"] == sum(map(len, ps))
    assert stats["prefix_cache_blocks"] > 0 and off.stats()["prefix_cache_hits"] == 0
    assert computed_prompt_tokens(on) < sum(map(len, ps)) // 2
    assert_all_blocks_free(on)
    assert_all_blocks_free(off)


@pytest.mark.slow
def test_cached_prefix_through_the_triton_kernels(llama):
    """The Triton ops (through the interpreter here) read a cached prefix like an earlier chunk."""
    pytest.importorskip("triton")
    ps = [STEM[:20] + [60, 61, 62], STEM[:20] + [70, 71]]  # the second reuses two blocks
    with use_backend("triton"):
        on, off = engine(llama, True), engine(llama, False)
        got = sequential(on, ps, greedy(3, ignore_eos=True))
        want = sequential(off, ps, greedy(3, ignore_eos=True))
    assert got == want and on.stats()["prefix_cache_hits"] == 2 * BLOCK
    assert_all_blocks_free(on)


def test_seeded_sampling_equal_with_and_without_caching(llama):
    ps = prompts(4)
    params = [SamplingParams(temperature=0.9, top_p=0.9, top_k=50, seed=100 + i, max_tokens=12, ignore_eos=True)
              for i in range(len(ps))]
    on, off = engine(llama, True), engine(llama, False)
    got = [on.generate([p], q)[0].output_token_ids for p, q in zip(ps, params)]
    want = [off.generate([p], q)[0].output_token_ids for p, q in zip(ps, params)]
    assert got == want and on.stats()["prefix_cache_hits"] > 0
    assert_all_blocks_free(on)


def test_interleaved_requests_sharing_prefixes_under_eviction_and_preemption(llama):
    ps = prompts(12)
    # 12 blocks hold about two of these requests at once (~45 prompt + 20 new tokens = 9 blocks each):
    # requests are preempted and recomputed, and cached blocks are evicted to make room.
    on, off = engine(llama, True, num_blocks=12), engine(llama, False, num_blocks=12)
    got, want = run_interleaved(on, ps, 20, every=2), run_interleaved(off, ps, 20, every=2)
    assert got == want
    assert on.scheduler.num_preemptions > 0 and on.kv_cache.allocator.num_evictions > 0
    assert on.stats()["prefix_cache_hits"] > 0
    assert_all_blocks_free(on)
    assert_all_blocks_free(off)


def test_chunked_prefill_after_a_cached_prefix(llama):
    ps = prompts(4)
    on = engine(llama, True, prefill_budget=5)  # smaller than a block: the rest comes in chunks
    off = engine(llama, False, prefill_budget=64)
    assert run_interleaved(on, ps, 8, every=2) == run_interleaved(off, ps, 8, every=2)
    assert on.stats()["prefix_cache_hits"] > 0
    assert_all_blocks_free(on)


def test_multi_turn_chat_reuses_earlier_turns_generated_tokens(llama):
    on, off = engine(llama, True), engine(llama, False)
    history: list[int] = list(STEM)
    computed_before = 0  # tokens whose keys the previous turn left in the cache
    for turn in range(4):
        history += [(13 * turn + j) % 300 + 60 for j in range(6)]  # the user's next message
        hits_before = on.stats()["prefix_cache_hits"]
        [a] = on.generate([history], greedy(9, ignore_eos=True))
        [b] = off.generate([history], greedy(9, ignore_eos=True))
        assert a.output_token_ids == b.output_token_ids
        # every full block of the previous turn (its prompt and all but its last generated token)
        expected = min(computed_before // BLOCK, (len(history) - 1) // BLOCK) * BLOCK
        assert on.stats()["prefix_cache_hits"] - hits_before == expected
        computed_before = len(history) + 8
        history += a.output_token_ids
    assert expected > len(STEM)
    assert_all_blocks_free(on)


def test_sliding_window_model_equal_with_and_without_caching(tmp_path):
    model = load(write_checkpoint(tmp_path, hf_model(family="mistral", sliding_window=12), tokenizer=False))
    try:
        ps = prompts(4)  # 40+ tokens: every prompt runs past the 12-token window
        on, off = engine(model, True), engine(model, False)
        assert sequential(on, ps, greedy(16, ignore_eos=True)) == sequential(off, ps, greedy(16, ignore_eos=True))
        assert on.stats()["prefix_cache_hits"] >= 3 * 2 * BLOCK
        assert_all_blocks_free(on)
    finally:
        model.close()


def test_deepseek_latent_cache_equal_with_and_without_caching(tmp_path):
    from inference_pio.engine.latent_kv_cache import LatentKVCache
    from tests.deepseek.checkpoints import hf_deepseek

    model = load(write_checkpoint(tmp_path, hf_deepseek(2), tokenizer=False))
    try:
        assert isinstance(model.plugin.kv_cache, LatentKVCache)
        ps = prompts(3)
        on, off = engine(model, True), engine(model, False)
        assert isinstance(on.kv_cache, LatentKVCache)
        assert sequential(on, ps, greedy(6, ignore_eos=True)) == sequential(off, ps, greedy(6, ignore_eos=True))
        assert on.stats()["prefix_cache_hits"] >= 2 * 2 * BLOCK
        assert_all_blocks_free(on)
    finally:
        model.close()


def test_plugin_option_turns_caching_off(tmp_path, llama):
    assert llama.plugin.kv_cache.prefix_caching  # on by default
    model = load(write_checkpoint(tmp_path, hf_model(), tokenizer=False), enable_prefix_caching=False)
    try:
        assert not model.plugin.kv_cache.prefix_caching
        for _ in range(2):
            model.engine.generate([STEM], greedy(2))
        assert model.engine.stats()["prefix_cache_hits"] == 0
    finally:
        model.close()


def test_a_plain_cache_is_untouched_without_the_engine():
    cache = PagedKVCache(1, 1, 4, num_blocks=4, block_size=BLOCK)
    assert not cache.prefix_caching and cache.find_cached_prefix(STEM, []) is None


def test_benchmark_smoke_run_reports_fewer_tokens_computed_and_the_same_answers(tmp_path):
    import json

    from benchmarks.engine.bench_prefix_caching import main

    out = tmp_path / "prefix.md"
    assert main(["--tiny", "--prefix-tokens", "40", "--turns", "3", "--repeats", "1", "--threads", "1",
                 "--out", str(out)]) == 0
    data = json.loads(out.with_suffix(".json").read_text())
    ttft, chat = data["ttft"], data["chat"]
    # the 40-token prefix holds two full blocks of 16 (the checkpoint's default block size)
    assert ttft["same_first_token"] and ttft["second_prompt_tokens_computed_on"] == ttft["prompt_tokens"] - 32
    assert chat["same_answers"]
    assert sum(chat["computed_on"]) < sum(chat["computed_off"]) == sum(chat["prompt_tokens_off"])
    assert out.with_suffix(".png").stat().st_size > 0 and "Time to first token" in out.read_text()
