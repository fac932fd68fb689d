"""``engine.LatentKVCache``: one tensor per layer serving as key and value cache."""

from __future__ import annotations

import pytest
import torch

from inference_pio.engine import KVCacheFullError, PagedKVCache
from inference_pio.engine.latent_kv_cache import LatentKVCache


def test_one_tensor_per_layer_is_both_caches():
    cache = LatentKVCache(3, 1, 48, num_blocks=5, block_size=16, dtype=torch.bfloat16)
    assert cache.value_caches is cache.key_caches and len(cache.key_caches) == 3
    assert all(t.shape == (5, 16, 1, 48) and t.dtype == torch.bfloat16 and t.device.type == "cpu"
               for t in cache.key_caches)
    assert len({t.data_ptr() for t in cache.key_caches}) == 3


def test_half_the_bytes_of_a_paged_cache_and_sized_by_budget():
    args = (4, 1, 576, 16, torch.bfloat16)
    assert 2 * LatentKVCache.bytes_per_block(*args) == PagedKVCache.bytes_per_block(*args) == 2 * 4 * 16 * 576 * 2
    cache = LatentKVCache.from_memory_budget(10 * LatentKVCache.bytes_per_block(*args) + 1, *args[:3], 16, torch.bfloat16)
    assert isinstance(cache, LatentKVCache) and cache.num_blocks == 10
    with pytest.raises(ValueError, match="holds no KV cache block"):
        LatentKVCache.from_memory_budget(100, *args[:3], 16, torch.bfloat16)


def test_blocks_tables_and_metadata_work_as_in_a_paged_cache():
    cache = LatentKVCache(1, 1, 16, num_blocks=3, block_size=4, dtype=torch.float32)
    cache.allocate("a", 6)
    cache.allocate("b", 3)
    meta = cache.build_metadata(["a", "b"], [6, 3])
    assert meta.slot_mapping.tolist() == [0, 1, 2, 3, 4, 5, 8, 9, 10] and meta.context_lens.tolist() == [6, 3]
    with pytest.raises(KVCacheFullError):
        cache.append_slots("b", 2)  # needs a fourth block
    with pytest.raises(ValueError, match="num_blocks must be an integer >= 1"):
        LatentKVCache(1, 1, 16, num_blocks=0)
