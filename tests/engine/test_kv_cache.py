"""PagedKVCache: block accounting, all-or-nothing allocation, and the step metadata tensors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_pio.engine import BlockAllocator, KVCacheFullError, PagedKVCache


def make_cache(num_blocks=8, block_size=4, **kw) -> PagedKVCache:
    return PagedKVCache(num_layers=2, num_kv_heads=2, head_dim=8, num_blocks=num_blocks, block_size=block_size,
                        dtype=torch.float32, **kw)


def snapshot(cache: PagedKVCache):
    """Everything a failed allocation must leave untouched."""
    tables = {s: cache.block_table(s) for s in cache._tables}
    lens = {s: cache.seq_len(s) for s in cache._tables}
    return tables, lens, list(cache.allocator._free), bytes(cache.allocator._in_use)


def test_tensors_have_the_paged_layout():
    cache = make_cache(num_blocks=5, block_size=16)
    assert len(cache.key_caches) == len(cache.value_caches) == 2
    for t in cache.key_caches + cache.value_caches:
        assert t.shape == (5, 16, 2, 8) and t.dtype == torch.float32
    assert cache.key_caches[0].data_ptr() != cache.key_caches[1].data_ptr()
    assert cache.key_caches[0].data_ptr() != cache.value_caches[0].data_ptr()


def test_from_memory_budget_counts_whole_blocks():
    per_block = PagedKVCache.bytes_per_block(3, 2, 8, 4, torch.float16)
    assert per_block == 2 * 3 * 4 * 2 * 8 * 2  # K and V, layers, block, heads, dim, fp16 bytes
    cache = PagedKVCache.from_memory_budget(per_block * 7 + per_block - 1, 3, 2, 8, block_size=4, dtype=torch.float16)
    assert cache.num_blocks == 7
    assert sum(t.numel() * t.element_size() for t in cache.key_caches + cache.value_caches) == 7 * per_block
    with pytest.raises(ValueError, match="holds no KV cache block"):
        PagedKVCache.from_memory_budget(per_block - 1, 3, 2, 8, block_size=4, dtype=torch.float16)


def test_slots_follow_block_tables():
    cache = make_cache()
    assert cache.allocate("a", 6) == [0, 1, 2, 3, 4, 5]          # blocks 0, 1
    assert cache.allocate("b", 3) == [8, 9, 10]                   # block 2
    assert cache.append_slots("a", 3) == [6, 7, 12]               # fills block 1, then block 3
    assert cache.block_table("a") == [0, 1, 3] and cache.seq_len("a") == 9
    assert cache.append_slots("b", 1) == [11]                     # same block, no allocation
    assert cache.usage().used_blocks == 4


def test_metadata_for_a_mixed_step():
    cache = make_cache()
    cache.allocate("a", 6)
    cache.allocate("b", 3)
    cache.append_slots("a", 3)
    meta = cache.build_metadata(["b", "a"], [3, 3])
    assert meta.slot_mapping.dtype == torch.int64 and meta.slot_mapping.tolist() == [8, 9, 10, 6, 7, 12]
    assert meta.block_tables.dtype == torch.int32 and meta.block_tables.is_contiguous()
    assert meta.block_tables.tolist() == [[2, 0, 0], [0, 1, 3]]
    assert meta.context_lens.dtype == torch.int32 and meta.context_lens.tolist() == [3, 9]
    assert meta.cu_seqlens_q.dtype == torch.int32 and meta.cu_seqlens_q.tolist() == [0, 3, 6]
    assert meta.cu_seqlens_k.dtype == torch.int32 and meta.cu_seqlens_k.tolist() == [0, 3, 12]
    assert (meta.max_seqlen_q, meta.max_seqlen_k, meta.num_seqs, meta.num_tokens) == (3, 9, 2, 6)
    assert not meta.is_decode


def test_metadata_buffers_are_reused_and_rewritten():
    cache = make_cache(num_blocks=64, block_size=2)
    for i in range(5):
        cache.allocate(i, 2 * i + 1)
    big = cache.build_metadata(list(range(5)), [2 * i + 1 for i in range(5)])
    ptr = big.block_tables.data_ptr()
    for i in (3, 1):
        cache.append_slots(i, 1)
    meta = cache.build_metadata([3, 1], [1, 1])
    assert meta.block_tables.data_ptr() == ptr  # smaller step: same buffer, no allocation
    expected = [cache.block_table(3), cache.block_table(1) + [0] * (len(cache.block_table(3)) - 2)]
    assert meta.block_tables.tolist() == expected  # stale entries of the bigger step are cleared
    assert meta.slot_mapping.tolist() == [cache.block_table(3)[3] * 2 + 1, cache.block_table(1)[1] * 2 + 1]
    assert meta.context_lens.tolist() == [8, 4] and meta.is_decode


def test_full_cache_raises_without_changing_state():
    cache = make_cache(num_blocks=3, block_size=4)
    cache.allocate("a", 5)
    before = snapshot(cache)
    assert not cache.can_allocate(9) and cache.can_allocate(4)
    with pytest.raises(KVCacheFullError, match=r"needs 3 block\(s\) of 4 tokens but only 1 are free") as err:
        cache.allocate("b", 9)
    assert (err.value.blocks_needed, err.value.blocks_free, err.value.block_size) == (3, 1, 4)
    assert snapshot(cache) == before and "b" not in cache
    assert not cache.can_append("a", 8)
    with pytest.raises(KVCacheFullError, match="needs 2 block"):
        cache.append_slots("a", 8)  # 13 tokens need 4 blocks, a holds 2
    assert snapshot(cache) == before


def test_errors_name_the_problem():
    cache = make_cache()
    cache.allocate("a", 1)
    with pytest.raises(ValueError, match="already allocated"):
        cache.allocate("a", 1)
    cache.free("a")
    with pytest.raises(KeyError, match="unknown sequence 'a'"):
        cache.free("a")
    with pytest.raises(KeyError, match="unknown sequence 'zz'"):
        cache.append_slots("zz", 1)
    cache.allocate("b", 2)
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        cache.append_slots("b", 0)
    with pytest.raises(ValueError, match=r"query_lens for sequence 'b' must be in \[1, 2\]"):
        cache.build_metadata(["b"], [3])
    with pytest.raises(ValueError, match="differ in length"):
        cache.build_metadata(["b"], [1, 1])


def test_allocator_rejects_double_and_foreign_frees_atomically():
    alloc = BlockAllocator(4)
    blocks = alloc.allocate(3)
    assert blocks == [0, 1, 2]
    with pytest.raises(ValueError, match="block 1 is already free"):
        alloc.free([0, 1, 1])
    assert alloc.num_free == 1  # nothing of the failed call was applied
    with pytest.raises(ValueError, match="out of range"):
        alloc.free([7])
    alloc.free([1])
    with pytest.raises(ValueError, match="block 1 is already free"):
        alloc.free([1])


_ops = st.lists(
    st.tuples(st.sampled_from(["alloc", "append", "free"]), st.integers(0, 5), st.integers(0, 12)), max_size=40
)


@settings(max_examples=60, deadline=None)
@given(_ops, st.integers(1, 5), st.integers(1, 12))
def test_random_operations_never_leak_or_share_blocks(ops, block_size, num_blocks):
    cache = make_cache(num_blocks=num_blocks, block_size=block_size)
    lens: dict[int, int] = {}
    slot_owner: dict[int, tuple[int, int]] = {}
    for op, seq, n in ops:
        before = snapshot(cache)
        try:
            if op == "alloc" and seq not in lens:
                slots = cache.allocate(seq, n)
                start, lens[seq] = 0, n
            elif op == "append" and seq in lens and n >= 1:
                slots = cache.append_slots(seq, n)
                start, lens[seq] = lens[seq], lens[seq] + n
            elif op == "free" and seq in lens:
                cache.free(seq)
                del lens[seq]
                slot_owner = {s: o for s, o in slot_owner.items() if o[0] != seq}
                slots = []
            else:
                continue
        except KVCacheFullError:
            assert snapshot(cache) == before
            continue
        for pos, slot in enumerate(slots, start):
            assert slot_owner.setdefault(slot, (seq, pos)) == (seq, pos), "slot handed out twice"
        # Invariants: tables disjoint, sized to their lengths, and free + used == all blocks.
        used = [b for s in lens for b in cache.block_table(s)]
        assert len(used) == len(set(used))
        assert set(used).isdisjoint(cache.allocator._free)
        assert len(used) + cache.allocator.num_free == num_blocks
        for s, length in lens.items():
            assert cache.seq_len(s) == length
            assert len(cache.block_table(s)) == -(-length // block_size)
    for s in list(lens):
        cache.free(s)
    assert sorted(cache.allocator.allocate(num_blocks)) == list(range(num_blocks))
