"""Rotary position embedding: the cos/sin cache and its in-place application to q and k."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..ops.rope_cache import build_cos_sin_cache
from ..ops.rotary_embedding import rotary_embedding


class RotaryEmbedding(nn.Module):
    """RoPE for heads of ``head_dim`` (the first ``rotary_dim`` dims rotate).

    The cos/sin cache ``[max_position, rotary_dim]`` is float32 (transformers also computes
    cos/sin in float32), built once for every position served, with the checkpoint's
    ``rope_scaling`` (default, linear, dynamic, llama3, yarn, longrope; see ``ops.rope_cache``).
    ``rotary_dim < head_dim`` is partial rotary (Phi-3 family): the other dims pass unrotated.
    """

    def __init__(self, head_dim: int, rotary_dim: int, max_position: int, base: float,
                 rope_scaling: dict | None = None, max_position_embeddings: int | None = None,
                 is_neox: bool = True, device: torch.device | str | None = "cpu"):
        super().__init__()
        self.head_dim = head_dim
        self.is_neox = is_neox
        cache = build_cos_sin_cache(rotary_dim, max_position, base, rope_scaling, max_position_embeddings,
                                    dtype=torch.float32, device=device)
        self.register_buffer("cos_sin_cache", cache.contiguous(), persistent=False)

    @property
    def max_position(self) -> int:
        return self.cos_sin_cache.shape[0]

    def forward(self, positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor | None) -> None:
        """In place on ``query [T, H*D]`` / ``key [T, KVH*D]`` (token stride may be a fused-qkv row)."""
        rotary_embedding(positions, query, key, self.head_dim, self.cos_sin_cache, self.is_neox)
