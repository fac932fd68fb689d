"""Test helpers for ops over a paged KV cache: random caches whose sequences live in shuffled,
non-contiguous physical blocks, their block tables and context lengths, and slot mappings.

Cache layout: ``[num_blocks, block_size, num_kv_heads, head_dim]``; token ``t`` of sequence ``s``
lives in block ``block_tables[s, t // block_size]`` at offset ``t % block_size``. Every slot no
sequence owns is NaN, so a kernel that reads past a context (or an unused block) shows it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .helpers import randn, device_under_test


@dataclass
class PagedKV:
    key_cache: torch.Tensor  # [num_blocks, block_size, num_kv_heads, head_dim]
    value_cache: torch.Tensor
    block_tables: torch.Tensor  # [num_seqs, max_blocks_per_seq] int32, unused entries = pad value
    context_lens: torch.Tensor  # [num_seqs] int32
    keys: list[torch.Tensor]  # per sequence [context_len, num_kv_heads, head_dim]: what the cache holds
    values: list[torch.Tensor]

    @property
    def block_size(self) -> int:
        return self.key_cache.shape[1]

    def caches64(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.key_cache.double(), self.value_cache.double()


def blocks_needed(context_lens, block_size: int) -> list[int]:
    return [(int(n) + block_size - 1) // block_size for n in context_lens]


def random_block_tables(
    context_lens, block_size: int, *, spare_blocks: int = 2, spare_columns: int = 1, pad_value: int = -1, device=None
) -> tuple[torch.Tensor, int]:
    """Block tables giving each sequence distinct physical blocks in random order, plus the
    number of blocks in the cache (``spare_blocks`` of them owned by nobody). Each row has
    ``spare_columns`` extra entries past the longest sequence, all unused entries ``pad_value``."""
    device = device or device_under_test()
    needed = blocks_needed(context_lens, block_size)
    num_blocks = sum(needed) + spare_blocks
    perm = torch.randperm(num_blocks).tolist()
    width = max(needed, default=0) + spare_columns
    tables = torch.full((len(needed), width), pad_value, dtype=torch.int32)
    used = 0
    for s, n in enumerate(needed):
        tables[s, :n] = torch.tensor(perm[used : used + n], dtype=torch.int32)
        used += n
    return tables.to(device), num_blocks


def slot_mapping(block_tables: torch.Tensor, seq_ids, positions, block_size: int, dtype=torch.int64) -> torch.Tensor:
    """Slots of tokens at ``positions`` of sequences ``seq_ids``: block * block_size + offset."""
    seq_ids = torch.as_tensor(seq_ids, dtype=torch.long, device=block_tables.device)
    positions = torch.as_tensor(positions, dtype=torch.long, device=block_tables.device)
    blocks = block_tables[seq_ids, positions // block_size].long()
    return (blocks * block_size + positions % block_size).to(dtype)


def make_paged_kv(
    context_lens, num_kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype, device=None, **table_kwargs
) -> PagedKV:
    """Random keys/values for sequences of ``context_lens`` tokens, stored in a NaN-poisoned paged
    cache through shuffled block tables (see ``random_block_tables`` for the keyword arguments)."""
    device = device or device_under_test()
    tables, num_blocks = random_block_tables(context_lens, block_size, device=device, **table_kwargs)
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    key_cache = torch.full(shape, float("nan"), dtype=dtype, device=device)
    value_cache = torch.full(shape, float("nan"), dtype=dtype, device=device)
    keys, values = [], []
    for s, n in enumerate(context_lens):
        k = randn(int(n), num_kv_heads, head_dim, dtype=dtype, device=device)
        v = randn(int(n), num_kv_heads, head_dim, dtype=dtype, device=device)
        slots = slot_mapping(tables, [s] * int(n), range(int(n)), block_size)
        key_cache.view(-1, num_kv_heads, head_dim)[slots] = k
        value_cache.view(-1, num_kv_heads, head_dim)[slots] = v
        keys.append(k)
        values.append(v)
    lens = torch.tensor([int(n) for n in context_lens], dtype=torch.int32, device=device)
    return PagedKV(key_cache, value_cache, tables, lens, keys, values)
