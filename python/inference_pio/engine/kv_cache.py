"""Paged KV cache: per-layer block tensors, a block allocator and per-sequence block tables.

Layout (shared with ``reshape_and_cache``, ``prefill_attention`` and ``paged_decode_attention``):

- ``key_caches[layer]`` / ``value_caches[layer]``: ``[num_blocks, block_size, num_kv_heads, head_dim]``.
- A token at position ``p`` of a sequence lives in slot ``block_table[p // block_size] * block_size
  + p % block_size`` (a slot is a row of the cache viewed as ``[num_blocks * block_size, ...]``).

Design, for a cheap hot path:

- Block tables are plain Python lists of ints per sequence: appending a block is ``list.append``, and a
  decode step that stays inside its last block allocates nothing at all.
- The metadata for a step (:meth:`PagedKVCache.build_metadata`) is written into preallocated host
  buffers through numpy views and returned as tensor views of those buffers (copied into preallocated
  device buffers when the cache lives on a GPU). The buffers only grow, when a step is larger than any
  before it; the returned tensors are valid until the next ``build_metadata`` call.
- Allocation is all-or-nothing: when the free list cannot cover a request, :class:`KVCacheFullError` is
  raised before any state changes, so a scheduler can preempt a sequence and retry.

Prefix caching (:meth:`PagedKVCache.enable_prefix_caching`, off by default here, on by default in the
engine): full blocks are registered under a chain hash of their tokens once computed
(:meth:`PagedKVCache.cache_computed_blocks`), and a new sequence starts with the cached blocks its
tokens lead with (:meth:`PagedKVCache.find_cached_prefix`, then ``allocate(..., prefix=hit)``); see
:mod:`.prefix_cache`. Every block of a sequence stays in its table until the sequence is freed (none
is dropped when it leaves a sliding window), so a cached block is exact for every layer and window.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InferencePioError
from .block_hash import BlockHash, extend_block_hashes, root_hash
from .metadata import AttentionMetadata, MetadataBuffers

if TYPE_CHECKING:
    from .prefix_cache import PrefixHit


class KVCacheFullError(InferencePioError, RuntimeError):
    """Raised when a request needs more free blocks than the cache has; no state was changed."""

    def __init__(self, blocks_needed: int, blocks_free: int, block_size: int, what: str = "request"):
        self.blocks_needed = blocks_needed
        self.blocks_free = blocks_free
        self.block_size = block_size
        super().__init__(
            f"KV cache full: {what} needs {blocks_needed} block(s) of {block_size} tokens "
            f"but only {blocks_free} are free"
        )


def _check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class BlockAllocator:
    """A free list of block ids ``0 .. num_blocks-1``; allocation is all-or-nothing.

    The free list is a stack: freed blocks are reused first, which keeps recently touched cache
    memory warm. ``_in_use`` (one byte per block) catches double frees and foreign ids in O(1).
    """

    def __init__(self, num_blocks: int):
        self.num_blocks = _check_count("num_blocks", num_blocks, 1)
        # Reversed so that pop() hands out 0, 1, 2, ... on a fresh cache (predictable in tests and logs).
        self._free: list[int] = list(range(self.num_blocks - 1, -1, -1))
        self._in_use = bytearray(self.num_blocks)

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self._free)

    def allocate(self, n: int) -> list[int]:
        """Returns ``n`` block ids, or raises :class:`KVCacheFullError` (state unchanged)."""
        if n > len(self._free):
            raise KVCacheFullError(n, len(self._free), block_size=0, what=f"allocation of {n} block(s)")
        free = self._free
        blocks = free[len(free) - n :][::-1]  # stack order: the block pop() would give first comes first
        del free[len(free) - n :]
        in_use = self._in_use
        for b in blocks:
            in_use[b] = 1
        return blocks

    def free(self, blocks: Sequence[int]) -> None:
        """Returns blocks to the free list; raises ValueError (state unchanged) on a bad or free id."""
        in_use = self._in_use
        seen: set[int] = set()
        for b in blocks:
            if not 0 <= b < self.num_blocks:
                raise ValueError(f"block id {b} is out of range [0, {self.num_blocks})")
            if not in_use[b] or b in seen:
                raise ValueError(f"block {b} is already free (double free)")
            seen.add(b)
        for b in blocks:
            in_use[b] = 0
        self._free.extend(blocks)


@dataclass(frozen=True)
class KVCacheUsage:
    """A snapshot for metrics and the scheduler."""

    num_blocks: int
    used_blocks: int
    free_blocks: int
    block_size: int
    num_seqs: int
    cached_blocks: int = 0  # blocks registered for prefix reuse (held or evictable; evictable ones count as free)
    prefix_cache_queries: int = 0  # tokens of the sequences looked up in the prefix cache
    prefix_cache_hits: int = 0  # of those, tokens found cached (not computed again)

    @property
    def used_fraction(self) -> float:
        return self.used_blocks / self.num_blocks


class PagedKVCache:
    """Per-layer key/value block tensors plus the block tables of the sequences that use them.

    Sequence ids are any hashable values chosen by the caller. Typical step::

        cache.allocate(seq_a, len(prompt_a))        # prefill: slots for the whole prompt
        cache.append_slots(seq_b, 1)                # decode: one more token
        meta = cache.build_metadata([seq_a, seq_b], [len(prompt_a), 1])
        ... model forward with meta and cache.key_caches / cache.value_caches ...
        cache.free(seq_a)                           # when the sequence finishes
    """

    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        num_blocks: int,
        block_size: int = 16,
        dtype: torch.dtype = torch.float16,
        device: torch.device | str = "cpu",
    ):
        self.num_layers = _check_count("num_layers", num_layers, 1)
        self.num_kv_heads = _check_count("num_kv_heads", num_kv_heads, 1)
        self.head_dim = _check_count("head_dim", head_dim, 1)
        self.block_size = _check_count("block_size", block_size, 1)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
        self.dtype = dtype
        self.device = torch.device(device)
        self.allocator = BlockAllocator(num_blocks)
        self.num_blocks = self.allocator.num_blocks
        shape = (self.num_blocks, self.block_size, self.num_kv_heads, self.head_dim)
        self.key_caches = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(self.num_layers)]
        self.value_caches = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(self.num_layers)]
        self._tables: dict[Hashable, list[int]] = {}
        self._lens: dict[Hashable, int] = {}
        self._buffers = MetadataBuffers(self.device)
        self._prefix_root: BlockHash | None = None  # set while prefix caching is on
        self._num_registered: dict[Hashable, int] = {}  # leading blocks of a sequence already cached
        self._prefix_queries = self._prefix_hits = 0

    # ----- sizing -----

    @staticmethod
    def bytes_per_block(num_layers: int, num_kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype) -> int:
        """Bytes one block costs across all layers, keys and values together."""
        elem = torch.empty((), dtype=dtype).element_size()
        return 2 * num_layers * block_size * num_kv_heads * head_dim * elem

    @classmethod
    def num_blocks_for_budget(
        cls, memory_bytes: int, num_layers: int, num_kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype
    ) -> int:
        """How many whole blocks fit in ``memory_bytes`` (may be 0)."""
        return int(memory_bytes) // cls.bytes_per_block(num_layers, num_kv_heads, head_dim, block_size, dtype)

    @classmethod
    def from_memory_budget(
        cls,
        memory_bytes: int,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        block_size: int = 16,
        dtype: torch.dtype = torch.float16,
        device: torch.device | str = "cpu",
    ) -> "PagedKVCache":
        """A cache with as many blocks as fit in ``memory_bytes``; raises ValueError if not even one fits."""
        _check_count("memory_bytes", memory_bytes, 0)
        per_block = cls.bytes_per_block(num_layers, num_kv_heads, head_dim, block_size, dtype)
        num_blocks = cls.num_blocks_for_budget(memory_bytes, num_layers, num_kv_heads, head_dim, block_size, dtype)
        if num_blocks < 1:
            raise ValueError(
                f"memory budget of {memory_bytes} bytes holds no KV cache block: one block of {block_size} tokens "
                f"costs {per_block} bytes ({num_layers} layers x K and V x {num_kv_heads} heads x {head_dim} x {dtype})"
            )
        return cls(num_layers, num_kv_heads, head_dim, num_blocks, block_size, dtype, device)

    # ----- per-sequence blocks -----

    def blocks_needed(self, num_tokens: int) -> int:
        """Blocks a new sequence of ``num_tokens`` tokens needs."""
        return -(-num_tokens // self.block_size)

    def can_allocate(self, num_tokens: int, prefix: PrefixHit | None = None) -> bool:
        """Whether a new sequence of ``num_tokens`` tokens (starting with ``prefix``'s cached blocks, if
        given) fits in the free blocks right now."""
        if prefix is None:
            return self.blocks_needed(num_tokens) <= self.allocator.num_free
        extra = self.blocks_needed(num_tokens) - len(prefix.blocks)
        return extra + prefix.num_evictable <= self.allocator.num_free

    def can_append(self, seq_id: Hashable, n: int = 1) -> bool:
        """Whether ``append_slots(seq_id, n)`` would succeed right now."""
        return self._extra_blocks(self._table(seq_id), self._lens[seq_id] + n) <= self.allocator.num_free

    def allocate(self, seq_id: Hashable, num_tokens: int, prefix: PrefixHit | None = None) -> list[int]:
        """Registers a new sequence holding ``num_tokens`` tokens; returns the slot ids of those not
        covered by ``prefix``.

        ``prefix`` (from :meth:`find_cached_prefix` with no cache change in between) supplies the
        leading blocks, already computed and shared with whoever else holds them; the caller then
        computes only the tokens after them. Raises ValueError if ``seq_id`` already has blocks or
        the prefix does not fit in ``num_tokens``, :class:`KVCacheFullError` (nothing changed) if the
        free blocks do not suffice.
        """
        if seq_id in self._tables:
            raise ValueError(f"sequence {seq_id!r} is already allocated; free it first or use append_slots")
        num_tokens = _check_count("num_tokens", num_tokens, 0)
        shared = prefix.blocks if prefix is not None else []
        if len(shared) * self.block_size > num_tokens:
            raise ValueError(f"sequence {seq_id!r}: a cached prefix of {len(shared) * self.block_size} tokens "
                             f"is longer than the {num_tokens} tokens allocated")
        what = f"sequence {seq_id!r} ({num_tokens} tokens)"
        if prefix is not None and not self.can_allocate(num_tokens, prefix):
            raise KVCacheFullError(self.blocks_needed(num_tokens) - len(shared) + prefix.num_evictable,
                                   self.allocator.num_free, self.block_size, what)
        if shared:
            self.allocator.touch(shared)  # first: the fresh blocks below must not evict them
        fresh = self._take_blocks(self.blocks_needed(num_tokens) - len(shared), what)
        self._tables[seq_id] = table = shared + fresh
        self._lens[seq_id] = num_tokens
        if prefix is not None:
            self._num_registered[seq_id] = len(shared)
            self._prefix_queries += prefix.num_queried_tokens
            self._prefix_hits += len(shared) * self.block_size
        start = len(shared) * self.block_size
        return self._slots(table, start, num_tokens - start)

    def append_slots(self, seq_id: Hashable, n: int = 1) -> list[int]:
        """Grows ``seq_id`` by ``n`` tokens, allocating blocks as needed; returns the new tokens' slot ids.

        Raises KeyError for an unknown sequence, :class:`KVCacheFullError` (nothing changed) when full.
        """
        table = self._table(seq_id)
        start = self._lens[seq_id]
        bs = self.block_size
        if n == 1 and start < len(table) * bs:  # the common decode step: room left in the last block
            self._lens[seq_id] = start + 1
            return [table[start // bs] * bs + start % bs]
        n = _check_count("n", n, 1)
        extra = self._extra_blocks(table, start + n)
        if extra:
            table.extend(self._take_blocks(extra, f"sequence {seq_id!r} (+{n} tokens)"))
        self._lens[seq_id] = start + n
        return self._slots(table, start, n)

    def free(self, seq_id: Hashable) -> None:
        """Returns the sequence's blocks to the free list (cached ones stay reusable until evicted);
        KeyError for an unknown (or already freed) id."""
        table = self._table(seq_id)
        self.allocator.free(table)
        del self._tables[seq_id]
        del self._lens[seq_id]
        self._num_registered.pop(seq_id, None)

    # ----- prefix caching -----

    def enable_prefix_caching(self, extra_key: bytes | str = b"") -> None:
        """Turns on prefix caching (only while no sequence holds blocks).

        ``extra_key`` goes into every block hash: whatever besides the tokens shapes the cached values
        and is not the same for all users of this cache (a model id, a LoRA adapter).
        """
        from .prefix_cache import PrefixCachingAllocator  # that module builds on this one

        if self.allocator.num_used or self._tables:
            raise RuntimeError("enable_prefix_caching needs an empty cache: free every sequence first")
        if self._prefix_root is None:
            self.allocator = PrefixCachingAllocator(self.num_blocks)
        self._prefix_root = root_hash(extra_key)

    @property
    def prefix_caching(self) -> bool:
        return self._prefix_root is not None

    def find_cached_prefix(self, token_ids: Sequence[int], block_hashes: list[BlockHash]) -> PrefixHit | None:
        """The cached blocks ``token_ids`` lead with, for ``allocate(..., prefix=...)``; None when prefix
        caching is off. Nothing changes except ``block_hashes``, the sequence's chain hashes, which the
        caller keeps between calls and this extends.

        At least the last token is always left out, so the model computes a token and gives logits:
        a prompt cached whole recomputes its last block.
        """
        if self._prefix_root is None:
            return None
        extend_block_hashes(block_hashes, token_ids, self.block_size, self._prefix_root)
        usable = (len(token_ids) - 1) // self.block_size
        return self.allocator.lookup(block_hashes[:usable], len(token_ids))

    def cache_computed_blocks(self, seq_id: Hashable, token_ids: Sequence[int], block_hashes: list[BlockHash],
                              num_computed: int) -> None:
        """Registers the sequence's full blocks among its first ``num_computed`` tokens (those whose keys
        and values are in the cache) for reuse; cheap when no block filled up since the last call."""
        if self._prefix_root is None:
            return
        done = self._num_registered.get(seq_id, 0)
        full = num_computed // self.block_size
        if full <= done:
            return
        extend_block_hashes(block_hashes, token_ids, self.block_size, self._prefix_root)
        table = self._table(seq_id)
        for i in range(done, full):
            self.allocator.register(table[i], block_hashes[i])
        self._num_registered[seq_id] = full

    def block_table(self, seq_id: Hashable) -> list[int]:
        """The sequence's physical block ids in order (a copy)."""
        return list(self._table(seq_id))

    def seq_len(self, seq_id: Hashable) -> int:
        """Tokens the sequence holds in the cache (including any appended for the current step)."""
        self._table(seq_id)
        return self._lens[seq_id]

    def __contains__(self, seq_id: Hashable) -> bool:
        return seq_id in self._tables

    @property
    def num_seqs(self) -> int:
        return len(self._tables)

    def usage(self) -> KVCacheUsage:
        a = self.allocator
        return KVCacheUsage(self.num_blocks, a.num_used, a.num_free, self.block_size, len(self._tables),
                            getattr(a, "num_cached", 0), self._prefix_queries, self._prefix_hits)

    # ----- step metadata -----

    def build_metadata(self, seq_ids: Sequence[Hashable], query_lens: Sequence[int]) -> AttentionMetadata:
        """Attention metadata for one forward step over ``seq_ids`` (in batch order).

        ``query_lens[i]`` is how many of sequence ``i``'s last tokens are new in this step (the prompt
        length for a prefill, 1 for a decode); those tokens must already have slots (``allocate`` /
        ``append_slots``). The cached context of sequence ``i`` is its full ``seq_len``.
        The returned tensors are views of reused buffers: valid until the next call.
        """
        if len(seq_ids) != len(query_lens):
            raise ValueError(f"seq_ids and query_lens differ in length: {len(seq_ids)} vs {len(query_lens)}")
        if not seq_ids:
            raise ValueError("build_metadata needs at least one sequence")
        bs = self.block_size
        all_tables, all_lens = self._tables, self._lens
        tables, lens = [], []
        slots: list[int] = []
        for seq_id, q in zip(seq_ids, query_lens):
            table = all_tables.get(seq_id)
            if table is None:
                self._table(seq_id)  # raises the unknown-sequence error
            n = all_lens[seq_id]
            tables.append(table)
            lens.append(n)
            if q == 1 and n:  # the decode case, kept off the generic path
                slots.append(table[(n - 1) // bs] * bs + (n - 1) % bs)
            elif type(q) is int and 1 < q <= n:
                slots.extend(self._slots(table, n - q, q))
            else:
                raise ValueError(f"query_lens for sequence {seq_id!r} must be in [1, {n}] (its cached length), got {q!r}")
        return self._buffers.fill(slots, tables, lens, query_lens)

    # ----- internals -----

    def _table(self, seq_id: Hashable) -> list[int]:
        try:
            return self._tables[seq_id]
        except KeyError:
            raise KeyError(f"unknown sequence {seq_id!r}: it was never allocated or was already freed") from None

    def _extra_blocks(self, table: list[int], new_len: int) -> int:
        return max(0, self.blocks_needed(new_len) - len(table))

    def _take_blocks(self, n: int, what: str) -> list[int]:
        if n > self.allocator.num_free:
            raise KVCacheFullError(n, self.allocator.num_free, self.block_size, what)
        return self.allocator.allocate(n)

    def _slots(self, table: list[int], start: int, n: int) -> list[int]:
        """Slot ids of positions ``start .. start+n-1``; one ``range`` per block touched, not per token."""
        bs = self.block_size
        out: list[int] = []
        pos, end = start, start + n
        while pos < end:
            idx, off = divmod(pos, bs)
            take = min(bs - off, end - pos)
            base = table[idx] * bs + off
            out.extend(range(base, base + take))
            pos += take
        return out
