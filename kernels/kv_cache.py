"""Writes new keys and values into the paged KV cache (Triton).

Backend convention (see inference_pio.ops.kv_cache):
``reshape_and_cache(key [T, KVH, D], value [T, KVH, D], key_cache, value_cache [num_blocks, block_size, KVH, D], slot_mapping [T])``.
Token t goes to block ``slot // block_size``, offset ``slot % block_size``; negative slots (padding
tokens) are skipped. Token strides of key/value are free (slices of a fused qkv).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_ELEMS = 2048  # elements of one token's [KVH, D] copied per loop step


@triton.jit
def _copy_token(src_ptr, dst_ptr, token, src_token_stride, src_head_stride, dst_base, dst_head_stride,
                num_heads, head_dim, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    d = tl.arange(0, BLOCK_D)
    for h0 in range(0, num_heads, BLOCK_H):
        h = (h0 + tl.arange(0, BLOCK_H)).to(tl.int64)
        mask = (h[:, None] < num_heads) & (d[None, :] < head_dim)
        x = tl.load(src_ptr + token * src_token_stride + h[:, None] * src_head_stride + d[None, :], mask=mask)
        tl.store(dst_ptr + dst_base + h[:, None] * dst_head_stride + d[None, :], x.to(dst_ptr.dtype.element_ty),
                 mask=mask)


@triton.jit
def _reshape_and_cache_kernel(k_ptr, v_ptr, kc_ptr, vc_ptr, slot_ptr,
                              k_token_stride, k_head_stride, v_token_stride, v_head_stride,
                              kc_block_stride, kc_slot_stride, kc_head_stride,
                              vc_block_stride, vc_slot_stride, vc_head_stride,
                              block_size, num_heads, head_dim, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    # A skipped token (negative slot) copies zero heads.
    heads = tl.where(slot >= 0, num_heads, 0)
    slot = tl.maximum(slot, 0)
    block, offset = slot // block_size, slot % block_size
    _copy_token(k_ptr, kc_ptr, token, k_token_stride, k_head_stride, block * kc_block_stride + offset * kc_slot_stride,
                kc_head_stride, heads, head_dim, BLOCK_H, BLOCK_D)
    _copy_token(v_ptr, vc_ptr, token, v_token_stride, v_head_stride, block * vc_block_stride + offset * vc_slot_stride,
                vc_head_stride, heads, head_dim, BLOCK_H, BLOCK_D)


def launch_config(num_heads: int, head_dim: int) -> dict:
    """Heads per loop step and the padded head dim (also used by the compile tests)."""
    block_d = triton.next_power_of_2(head_dim)
    return dict(BLOCK_H=max(1, min(triton.next_power_of_2(num_heads), BLOCK_ELEMS // block_d)), BLOCK_D=block_d,
                num_warps=4)


def reshape_and_cache(key: torch.Tensor, value: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                      slot_mapping: torch.Tensor) -> None:
    """Copies key/value [T, KVH, D] into the caches [num_blocks, block_size, KVH, D] at ``slot_mapping [T]``."""
    tokens, num_heads, head_dim = key.shape
    if tokens == 0:
        return
    _reshape_and_cache_kernel[(tokens,)](
        key, value, key_cache, value_cache, slot_mapping,
        key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        key_cache.stride(0), key_cache.stride(1), key_cache.stride(2),
        value_cache.stride(0), value_cache.stride(1), value_cache.stride(2),
        key_cache.shape[1], num_heads, head_dim, **launch_config(num_heads, head_dim))
