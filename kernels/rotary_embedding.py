"""Rotary position embedding (Triton), in place on query and key.

Backend convention (see inference_pio.ops.rotary_embedding):
``rotary_embedding(positions [T], query [T, H, D], key [T, KVH, D] | None, cos_sin_cache [max_pos, rot], is_neox)``.
cos_sin_cache rows hold rot/2 cosines then rot/2 sines (float32 or the query dtype). Only the first
``rot`` dims rotate; NeoX pairs x[i] with x[i + rot/2], GPT-J pairs x[2i] with x[2i+1].
out1 = x1*cos - x2*sin, out2 = x2*cos + x1*sin, in float32. Token strides are free (slices of a
fused qkv); heads and head dims are addressed through their strides.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# Heads rotated per program: one token's cos/sin row is loaded once and reused across them.
BLOCK_HEADS = 8


@triton.jit
def _rotate_heads(x_ptr, token, token_stride, head_stride, num_heads, head_start, cos, sin, half,
                  IS_NEOX: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr):
    heads = head_start + tl.arange(0, BLOCK_H)
    i = tl.arange(0, BLOCK_HALF)
    if IS_NEOX:
        first, second = i, i + half
    else:
        first, second = 2 * i, 2 * i + 1
    base = x_ptr + token * token_stride + heads[:, None].to(tl.int64) * head_stride
    mask = (heads[:, None] < num_heads) & (i[None, :] < half)
    x1 = tl.load(base + first[None, :], mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(base + second[None, :], mask=mask, other=0.0).to(tl.float32)
    out_ty = x_ptr.dtype.element_ty
    tl.store(base + first[None, :], (x1 * cos - x2 * sin).to(out_ty), mask=mask)
    tl.store(base + second[None, :], (x2 * cos + x1 * sin).to(out_ty), mask=mask)


@triton.jit
def _rotary_kernel(pos_ptr, q_ptr, k_ptr, cache_ptr, q_token_stride, q_head_stride, k_token_stride, k_head_stride,
                   cache_stride, num_q_heads, num_k_heads, half,
                   HAS_KEY: tl.constexpr, IS_NEOX: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)
    # Axis 1 enumerates query head blocks first, then key head blocks.
    head_block = tl.program_id(1)
    pos = tl.load(pos_ptr + token).to(tl.int64)
    i = tl.arange(0, BLOCK_HALF)
    cos = tl.load(cache_ptr + pos * cache_stride + i, mask=i < half, other=0.0).to(tl.float32)[None, :]
    sin = tl.load(cache_ptr + pos * cache_stride + half + i, mask=i < half, other=0.0).to(tl.float32)[None, :]
    q_blocks = tl.cdiv(num_q_heads, BLOCK_H)
    if head_block < q_blocks:
        _rotate_heads(q_ptr, token, q_token_stride, q_head_stride, num_q_heads, head_block * BLOCK_H, cos, sin, half,
                      IS_NEOX, BLOCK_H, BLOCK_HALF)
    elif HAS_KEY:
        _rotate_heads(k_ptr, token, k_token_stride, k_head_stride, num_k_heads, (head_block - q_blocks) * BLOCK_H,
                      cos, sin, half, IS_NEOX, BLOCK_H, BLOCK_HALF)


def launch_config(num_q_heads: int, num_k_heads: int, rot: int) -> dict:
    """Heads per program and the padded half rotary width (also used by the compile tests)."""
    return dict(BLOCK_H=min(BLOCK_HEADS, triton.next_power_of_2(max(num_q_heads, num_k_heads, 1))),
                BLOCK_HALF=triton.next_power_of_2(max(rot // 2, 1)), num_warps=4)


def rotary_embedding(positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor | None,
                     cos_sin_cache: torch.Tensor, is_neox: bool) -> None:
    """Rotates query [T, H, D] and key [T, KVH, D] (or None) in place at ``positions [T]``."""
    tokens, num_q_heads, _ = query.shape
    if tokens == 0:
        return
    half = cos_sin_cache.shape[1] // 2
    num_k_heads = key.shape[1] if key is not None else 0
    config = launch_config(num_q_heads, num_k_heads, cos_sin_cache.shape[1])
    block_h = config["BLOCK_H"]
    head_blocks = triton.cdiv(num_q_heads, block_h) + triton.cdiv(num_k_heads, block_h)
    k = key if key is not None else query  # a placeholder pointer; HAS_KEY=False never touches it
    _rotary_kernel[(tokens, head_blocks)](
        positions, query, k, cos_sin_cache, query.stride(0), query.stride(1), k.stride(0), k.stride(1),
        cos_sin_cache.stride(0), num_q_heads, num_k_heads, half,
        HAS_KEY=key is not None, IS_NEOX=bool(is_neox), **config)
