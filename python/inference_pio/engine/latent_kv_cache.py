"""A paged KV cache whose values live inside the keys: one block tensor per layer.

Multi-head latent attention (DeepSeek-V2/V3) caches, per token, one compressed row: the latent
``c_kv`` plus the decoupled rope key. Read in the absorbed form it is multi-query attention with
one kv head whose values are a slice of the keys, so the same tensor serves as key and value cache
(the attention ops accept ``key_cache is value_cache``). A ``PagedKVCache`` would hold a second,
never-read tensor of the same size; this one does not.

Layout: ``key_caches[layer]`` is ``[num_blocks, block_size, num_kv_heads, head_dim]`` and
``value_caches[layer]`` is the same tensor object. Block tables, allocation and step metadata are
``PagedKVCache``'s unchanged.
"""

from __future__ import annotations

import torch

from .kv_cache import PagedKVCache
from .metadata import MetadataBuffers


class LatentKVCache(PagedKVCache):
    """``PagedKVCache`` with one shared key/value tensor per layer (same constructor arguments)."""

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int, num_blocks: int, block_size: int = 16,
                 dtype: torch.dtype = torch.float16, device: torch.device | str = "cpu"):
        # The base validates the arguments and sets up blocks and tables; its two tensors per layer
        # are built on the meta device (no memory) and replaced by the one real tensor below.
        super().__init__(num_layers, num_kv_heads, head_dim, num_blocks, block_size, dtype, "meta")
        self.device = torch.device(device)
        self._buffers = MetadataBuffers(self.device)
        shape = (self.num_blocks, self.block_size, self.num_kv_heads, self.head_dim)
        self.key_caches = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(self.num_layers)]
        self.value_caches = self.key_caches

    @staticmethod
    def bytes_per_block(num_layers: int, num_kv_heads: int, head_dim: int, block_size: int, dtype: torch.dtype) -> int:
        """Bytes one block costs across all layers (one row per token and layer, no separate values)."""
        elem = torch.empty((), dtype=dtype).element_size()
        return num_layers * block_size * num_kv_heads * head_dim * elem
