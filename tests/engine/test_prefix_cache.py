"""Prefix caching in the KV cache, without a model: chain hashes, reference counts, the LRU evictable
pool, and the promise that caching never makes an allocation fail that would succeed without it."""

from __future__ import annotations

import random

import pytest
import torch

from inference_pio.engine import KVCacheFullError, PagedKVCache
from inference_pio.engine.block_hash import extend_block_hashes, root_hash
from inference_pio.engine.prefix_cache import PrefixCachingAllocator

BS = 4


def cache(num_blocks: int = 8, caching: bool = True) -> PagedKVCache:
    c = PagedKVCache(num_layers=1, num_kv_heads=1, head_dim=4, num_blocks=num_blocks, block_size=BS,
                     dtype=torch.float32)
    if caching:
        c.enable_prefix_caching()
    return c


def run(c: PagedKVCache, seq_id, tokens: list[int], hashes: list | None = None) -> int:
    """Admits ``tokens`` as a new sequence the way the scheduler does, marks them all computed;
    returns how many tokens the prefix cache supplied."""
    hashes = [] if hashes is None else hashes
    hit = c.find_cached_prefix(tokens, hashes)
    c.allocate(seq_id, len(tokens), hit)
    c.cache_computed_blocks(seq_id, tokens, hashes, len(tokens))
    return len(hit.blocks) * BS


def test_chain_hash_names_a_block_by_everything_before_it():
    root = root_hash()
    a = extend_block_hashes([], [1, 2, 3, 4, 5, 6, 7, 8, 9], BS, root)
    b = extend_block_hashes([], [1, 2, 3, 4, 5, 6, 7, 9], BS, root)
    c = extend_block_hashes([], [0, 2, 3, 4, 5, 6, 7, 8], BS, root)
    assert len(a) == 2 and a[0] == b[0] and a[1] != b[1]  # the partial block is not hashed
    assert c[0] != a[0] and c[1] != a[1]  # same tokens in block 1, different parent
    assert extend_block_hashes([], [1, 2, 3, 4], BS, root_hash("lora-7"))[0] != a[0]
    grown = extend_block_hashes(list(a[:1]), [1, 2, 3, 4, 5, 6, 7, 8], BS, root)
    assert grown == a  # extending continues the chain from the kept hashes


def test_a_shared_prefix_is_reused_and_reference_counted():
    c = cache()
    prompt = list(range(10, 20))  # 2 full blocks + 2 tokens
    assert run(c, "a", prompt) == 0
    assert c.usage().cached_blocks == 2
    assert run(c, "b", prompt[:8] + [99, 98, 97]) == 8
    assert c.block_table("b")[:2] == c.block_table("a")[:2]
    assert c.block_table("b")[2] not in c.block_table("a")
    assert c.usage().used_blocks == 3 + 1  # a: 3 blocks, b: its own third block
    c.free("a")
    assert c.usage().used_blocks == 3  # the two shared blocks are still held by b
    c.free("b")
    u = c.usage()
    assert (u.used_blocks, u.free_blocks, u.cached_blocks) == (0, 8, 2)  # cached blocks count as free
    assert (u.prefix_cache_queries, u.prefix_cache_hits) == (10 + 11, 8)


def test_a_whole_cached_prompt_still_computes_its_last_block():
    c = cache()
    prompt = list(range(8))  # exactly two blocks
    run(c, "a", prompt)
    c.free("a")
    hit = c.find_cached_prefix(prompt, [])
    assert len(hit.blocks) == 1  # the last token must be computed for logits: its block is recomputed
    assert len(c.find_cached_prefix(prompt + [5], []).blocks) == 2


def test_new_tokens_never_land_in_a_shared_block():
    c = cache()
    run(c, "a", list(range(8)))
    hashes: list = []
    prompt = list(range(8)) + [50]
    hit = c.find_cached_prefix(prompt, hashes)
    slots = c.allocate("b", len(prompt), hit)
    shared = set(c.block_table("a"))
    assert len(slots) == 1 and slots[0] // BS not in shared
    c.append_slots("b", 3)
    assert not set(c.block_table("b")[2:]) & shared


def test_eviction_is_least_recently_freed_first_and_only_when_needed():
    c = cache(num_blocks=4)
    run(c, "a", [1] * 8 + [0])  # blocks 0, 1 cached; block 2 holds the tail
    c.free("a")
    run(c, "b", [2] * 4 + [0])  # takes the never-cached block 3 and block 2 (uncached), evicts nothing
    assert c.allocator.num_evictions == 0
    c.free("b")
    assert len(c.find_cached_prefix([1] * 8 + [0], []).blocks) == 2
    # 4 fresh blocks: every cached block goes, the oldest-freed first
    c.allocate("c", 16)
    assert c.allocator.num_evictions == 3 and c.usage().cached_blocks == 0
    assert c.find_cached_prefix([1] * 8 + [0], []).blocks == []


def test_touching_evictable_blocks_counts_against_the_free_blocks():
    c = cache(num_blocks=3)
    run(c, "a", [1] * 8 + [2])
    c.free("a")
    run(c, "x", [7] * 4)  # holds the third block: the two cached ones are all that is free
    hit = c.find_cached_prefix([1] * 8 + [3, 3, 3, 3, 3], [])
    assert len(hit.blocks) == 2 and hit.num_evictable == 2
    # 13 tokens = 4 blocks: 2 cached + 2 fresh, but only 2 blocks are free in all
    assert not c.can_allocate(13, hit) and not c.can_allocate(13)
    with pytest.raises(KVCacheFullError):
        c.allocate("b", 13, hit)
    assert c.usage().used_blocks == 1 and c.usage().cached_blocks == 3  # nothing changed
    assert c.can_allocate(8, hit) and not c.can_allocate(9, hit)  # 9 tokens need a third block


def test_enable_needs_an_empty_cache():
    c = cache(caching=False)
    c.allocate("a", 3)
    with pytest.raises(RuntimeError, match="empty cache"):
        c.enable_prefix_caching()
    assert c.find_cached_prefix([1, 2, 3, 4, 5], []) is None


def test_allocator_rejects_double_frees_and_sharing_uncached_blocks():
    a = PrefixCachingAllocator(4)
    [b0, b1] = a.allocate(2)
    with pytest.raises(ValueError, match="not cached"):
        a.touch([b0])
    a.register(b0, b"h0")
    a.touch([b0])
    a.free([b0, b1])
    with pytest.raises(ValueError, match="double free"):
        a.free([b1])
    a.free([b0])
    with pytest.raises(ValueError, match="double free"):
        a.free([b0])
    with pytest.raises(ValueError, match="is free"):
        a.register(b1, b"h1")
    assert (a.num_free, a.num_used, a.num_cached, a.num_evictable) == (4, 0, 1, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_traffic_keeps_counts_exact_and_never_fails_where_no_caching_would_not(seed):
    """Random admissions over a few shared prefixes, growth and frees, on a cache with prefix caching
    and one without, driven alike: every allocation that fits without caching fits with it, and the
    reference counts always equal how many tables hold each block."""
    rng = random.Random(seed)
    cached, plain = cache(num_blocks=12), cache(num_blocks=12, caching=False)
    stems = [[rng.randrange(50) for _ in range(rng.randrange(4, 14))] for _ in range(3)]
    live: dict[int, list[int]] = {}
    hashes: dict[int, list] = {}
    for step in range(300):
        op = rng.random()
        if op < 0.45:
            tokens = rng.choice(stems) + [rng.randrange(50) for _ in range(rng.randrange(1, 7))]
            fits_plain = plain.can_allocate(len(tokens))
            hit = cached.find_cached_prefix(tokens, hashes.setdefault(step, []))
            if fits_plain:
                assert cached.can_allocate(len(tokens), hit)
                plain.allocate(step, len(tokens))
                cached.allocate(step, len(tokens), hit)
                cached.cache_computed_blocks(step, tokens, hashes[step], len(tokens))
                live[step] = tokens
        elif op < 0.7 and live:
            sid = rng.choice(list(live))
            n = rng.randrange(1, 6)
            if plain.can_append(sid, n):
                assert cached.can_append(sid, n)
                plain.append_slots(sid, n)
                cached.append_slots(sid, n)
                live[sid] += [rng.randrange(50) for _ in range(n)]
                cached.cache_computed_blocks(sid, live[sid], hashes[sid], len(live[sid]))
        elif live:
            sid = rng.choice(list(live))
            plain.free(sid)
            cached.free(sid)
            del live[sid]
        holders = [b for sid in live for b in cached.block_table(sid)]
        alloc = cached.allocator
        assert all(alloc._refs[b] == holders.count(b) for b in range(12))
        assert cached.usage().used_blocks == len(set(holders))
        assert cached.usage().free_blocks >= plain.usage().free_blocks
    for sid in list(live):
        cached.free(sid)
    assert cached.usage().used_blocks == 0 and cached.usage().free_blocks == 12
    assert cached.usage().prefix_cache_hits > 0
