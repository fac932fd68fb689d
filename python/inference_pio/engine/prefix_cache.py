"""Automatic prefix caching: full KV blocks found again by a chain hash of their tokens.

A full block's keys and values depend on every token before it, so a block is named by the hash of
its parent block's hash, its own token ids and the chain's root key (what else changes the cached
values: the model, later a LoRA adapter). Two sequences that share their first ``k`` full blocks of
tokens share their first ``k`` hashes, and a new sequence can take the blocks another one already
computed instead of computing them again.

:class:`PrefixCachingAllocator` is :class:`~inference_pio.engine.kv_cache.BlockAllocator` with
reference counts and that hash index:

- a block holds at most one hash, registered once its tokens are all in the cache and never
  changed while it is registered (new tokens are only ever written after the cached prefix);
- a block no sequence holds any more stays cached in an evictable pool, least recently freed first
  out; allocation takes never-cached free blocks first, then evicts from that pool. Evictable blocks
  count as free, so caching never makes an allocation fail that would succeed without it.

The hashes themselves are in :mod:`.block_hash`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from .block_hash import BlockHash
from .kv_cache import KVCacheFullError, _check_count

@dataclass(frozen=True)
class PrefixHit:
    """The cached leading blocks a new sequence can take: their ids and how many are evictable (taking
    those removes them from the free count, like a fresh allocation would)."""

    blocks: list[int]
    num_evictable: int
    num_queried_tokens: int  # the sequence's tokens when it was looked up (for the hit-rate figures)


class PrefixCachingAllocator:
    """A reference-counted block allocator with a hash index of full blocks and an LRU evictable pool.

    Same interface as ``BlockAllocator`` (``allocate``, ``free``, ``num_free``, ``num_used``) plus
    :meth:`lookup`, :meth:`touch` and :meth:`register`. ``free`` drops one reference per block.
    """

    def __init__(self, num_blocks: int):
        self.num_blocks = _check_count("num_blocks", num_blocks, 1)
        # Never-cached free blocks: a stack, handed out 0, 1, 2, ... on a fresh cache.
        self._free: list[int] = list(range(self.num_blocks - 1, -1, -1))
        self._evictable: OrderedDict[int, None] = OrderedDict()  # cached, unreferenced; oldest first
        self._refs = [0] * self.num_blocks
        self._hash_of: dict[int, BlockHash] = {}
        self._block_of: dict[BlockHash, int] = {}
        self.num_evictions = 0

    @property
    def num_free(self) -> int:
        """Blocks an allocation may take: never-cached free ones plus evictable cached ones."""
        return len(self._free) + len(self._evictable)

    @property
    def num_used(self) -> int:
        """Blocks some sequence holds."""
        return self.num_blocks - self.num_free

    @property
    def num_cached(self) -> int:
        """Blocks registered under a hash, held or evictable."""
        return len(self._block_of)

    @property
    def num_evictable(self) -> int:
        return len(self._evictable)

    def allocate(self, n: int) -> list[int]:
        """Returns ``n`` blocks with one reference each (evicting cached ones if needed), or raises
        :class:`KVCacheFullError` with the state unchanged."""
        if n > self.num_free:
            raise KVCacheFullError(n, self.num_free, block_size=0, what=f"allocation of {n} block(s)")
        free, refs = self._free, self._refs
        take = min(n, len(free))
        blocks = free[len(free) - take:][::-1]
        del free[len(free) - take:]
        for _ in range(n - take):
            block, _ = self._evictable.popitem(last=False)
            del self._block_of[self._hash_of.pop(block)]
            self.num_evictions += 1
            blocks.append(block)
        for b in blocks:
            refs[b] = 1
        return blocks

    def free(self, blocks: Sequence[int]) -> None:
        """Drops one reference to each block; raises ValueError (state unchanged) on a bad or free id.

        Unreferenced cached blocks join the evictable pool with the sequence's last block oldest, so a
        shared leading block outlives the tail only this sequence had.
        """
        refs = self._refs
        seen: set[int] = set()
        for b in blocks:
            if not 0 <= b < self.num_blocks:
                raise ValueError(f"block id {b} is out of range [0, {self.num_blocks})")
            if refs[b] == 0 or b in seen:
                raise ValueError(f"block {b} is already free (double free)")
            seen.add(b)
        for b in reversed(blocks):
            refs[b] -= 1
            if refs[b] == 0:
                if b in self._hash_of:
                    self._evictable[b] = None
                else:
                    self._free.append(b)

    def lookup(self, hashes: Sequence[BlockHash], num_queried_tokens: int) -> PrefixHit:
        """The longest run of leading ``hashes`` with a cached block (nothing changes)."""
        blocks: list[int] = []
        evictable = 0
        for h in hashes:
            b = self._block_of.get(h)
            if b is None:
                break
            blocks.append(b)
            evictable += self._refs[b] == 0
        return PrefixHit(blocks, evictable, num_queried_tokens)

    def touch(self, blocks: Sequence[int]) -> None:
        """Takes one more reference to each cached block (out of the evictable pool if it was there)."""
        refs = self._refs
        for b in blocks:
            if b not in self._hash_of:
                raise ValueError(f"block {b} is not cached; only cached blocks can be shared")
            if refs[b] == 0:
                del self._evictable[b]
            refs[b] += 1

    def register(self, block: int, block_hash: BlockHash) -> None:
        """Caches a held, fully computed block under ``block_hash``.

        When another block already holds that hash (two sequences computed the same prefix at once),
        this one stays uncached and returns to the plain free list when released.
        """
        if self._refs[block] == 0:
            raise ValueError(f"block {block} is free; only a block a sequence holds can be cached")
        if block in self._hash_of or block_hash in self._block_of:
            return
        self._hash_of[block] = block_hash
        self._block_of[block_hash] = block


__all__ = ["PrefixCachingAllocator", "PrefixHit"]
