"""Attention over the paged KV cache, driven by ``engine.AttentionMetadata``."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..ops.kv_cache import reshape_and_cache
from ..ops.paged_decode_attention import paged_decode_attention
from ..ops.prefill_attention import prefill_attention


class PagedAttention(nn.Module):
    """Causal multi-head attention (GQA/MQA) whose keys and values live in a paged cache.

    The step's new keys/values are written to the cache first (``reshape_and_cache`` at
    ``slot_mapping``); queries then read everything cached for their sequence. A step where every
    sequence brings one token uses ``paged_decode_attention``; any other step (prompt chunks,
    possibly after earlier chunks) uses ``prefill_attention`` in paged mode.
    """

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float | None = None,
                 sliding_window: int | None = None):
        super().__init__()
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.scale = head_dim ** -0.5 if scale is None else scale
        self.sliding_window = sliding_window

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_cache: torch.Tensor, value_cache: torch.Tensor, meta, out: torch.Tensor) -> torch.Tensor:
        """query ``[T, H, D]``, key/value ``[T, KVH, D]`` (views of a fused qkv row are fine);
        caches ``[num_blocks, block_size, KVH, D]``; writes ``out [T, H, D]`` and returns it."""
        reshape_and_cache(key, value, key_cache, value_cache, meta.slot_mapping)
        if meta.is_decode:
            return paged_decode_attention(query, key_cache, value_cache, meta.block_tables, meta.context_lens,
                                          self.scale, self.sliding_window, max_context_len=meta.max_seqlen_k, out=out)
        return prefill_attention(query, key_cache, value_cache, meta.cu_seqlens_q, meta.cu_seqlens_k, True,
                                 self.scale, self.sliding_window, block_tables=meta.block_tables,
                                 max_seqlen_q=meta.max_seqlen_q, max_seqlen_k=meta.max_seqlen_k, out=out)
