"""Prefill attention over packed variable-length sequences (Triton), FlashAttention-2 style.

Backend convention (see inference_pio.ops.prefill_attention):
``prefill_attention(query [total_q, H, D], key, value, cu_seqlens_q [B+1], cu_seqlens_k [B+1], causal, scale,
sliding_window, block_tables, max_seqlen_q, max_seqlen_k, out [total_q, H, D])``.
key/value are [total_k, KVH, D], or paged caches [num_blocks, block_size, KVH, D] when
``block_tables [B, max_blocks]`` is given (key j of sequence b then lives at block
block_tables[b, j // block_size], offset j % block_size).
Query i of a sequence sits at position p = len_k - len_q + i and sees key j iff (not causal or j <= p)
and (no window or j > p - window); rows that see no key are zeros.

One program per (query tile, sequence, query head); head h reads KV head h // (H / KVH) in place
(no repeated K/V). Online softmax with float32 accumulation; only the key tiles a query tile can see
are visited. Head dims up to 256 are padded to a power of two with masks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (LOG2E, check_head_dim, dot_precision, for_interpreter, load_kv_tile, normalized,
                      online_softmax_step, softmax_start)

OP = "prefill_attention"


@triton.jit
def _prefill_kernel(q_ptr, k_ptr, v_ptr, out_ptr, cu_q_ptr, cu_k_ptr, bt_ptr,
                    q_stride_t, q_stride_h, k_stride_t, k_stride_slot, k_stride_h,
                    v_stride_t, v_stride_slot, v_stride_h, out_stride_t, out_stride_h, bt_stride,
                    qk_scale, window, block_size, group, head_dim,
                    CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, PAGED: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                    DOT_PRECISION: tl.constexpr):
    m_block = tl.program_id(0)
    b = tl.program_id(1)
    h = tl.program_id(2)
    kvh = h // group
    q_start = tl.load(cu_q_ptr + b)
    len_q = tl.load(cu_q_ptr + b + 1) - q_start
    k_start = tl.load(cu_k_ptr + b)
    len_k = tl.load(cu_k_ptr + b + 1) - k_start

    i = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
    pos = len_k - len_q + i  # absolute position of each query row
    d = tl.arange(0, BLOCK_D)
    row_mask = (i[:, None] < len_q) & (d[None, :] < head_dim)
    q_rows = (q_start + i).to(tl.int64)
    q = tl.load(q_ptr + q_rows[:, None] * q_stride_t + h * q_stride_h + d[None, :], mask=row_mask, other=0.0)

    # The key range this tile can see (empty for tiles past the end of the sequence).
    lo = 0
    hi = tl.where(m_block * BLOCK_M < len_q, len_k, 0)
    if CAUSAL:
        last_pos = len_k - len_q + tl.minimum((m_block + 1) * BLOCK_M, len_q) - 1
        hi = tl.minimum(hi, last_pos + 1)
    if HAS_WINDOW:
        lo = tl.maximum(len_k - len_q + m_block * BLOCK_M - window + 1, 0) // BLOCK_N * BLOCK_N

    m, l, acc = softmax_start(BLOCK_M, BLOCK_D)
    for n0 in range(lo, hi, BLOCK_N):
        j = n0 + tl.arange(0, BLOCK_N)
        j_mask = j < hi
        if PAGED:
            block = tl.load(bt_ptr + b * bt_stride + j // block_size, mask=j_mask, other=0).to(tl.int64)
            slot = j % block_size
            k_tok = block * k_stride_t + slot * k_stride_slot + kvh * k_stride_h
            v_tok = block * v_stride_t + slot * v_stride_slot + kvh * v_stride_h
        else:
            k_tok = (k_start + j).to(tl.int64) * k_stride_t + kvh * k_stride_h
            v_tok = (k_start + j).to(tl.int64) * v_stride_t + kvh * v_stride_h
        kt, v = load_kv_tile(k_ptr, v_ptr, k_tok, v_tok, j_mask, d, head_dim)
        s = tl.dot(q, kt, input_precision=DOT_PRECISION) * qk_scale
        visible = j_mask[None, :]
        if CAUSAL:
            visible = visible & (j[None, :] <= pos[:, None])
        if HAS_WINDOW:
            visible = visible & (j[None, :] > pos[:, None] - window)
        s = tl.where(visible, s, float("-inf"))
        m, l, acc = online_softmax_step(s, v, m, l, acc, DOT_PRECISION)

    tl.store(out_ptr + q_rows[:, None] * out_stride_t + h * out_stride_h + d[None, :],
             normalized(acc, l).to(out_ptr.dtype.element_ty), mask=row_mask)


def launch_config(head_dim: int, interpret: bool | None = None) -> dict:
    """Tiles, warps and pipeline stages of ``_prefill_kernel`` per head dim (also used by the compile
    tests); small tiles under the interpreter, where padding costs time."""
    block_d = check_head_dim(OP, head_dim)
    if for_interpreter(interpret):
        block_m, block_n, warps, stages = 16, 16, 4, 1
    elif block_d <= 64:
        block_m, block_n, warps, stages = 128, 64, 4, 3
    elif block_d <= 128:
        block_m, block_n, warps, stages = 128, 64, 8, 2
    else:
        block_m, block_n, warps, stages = 64, 32, 8, 2
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, num_warps=warps, num_stages=stages)


def prefill_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seqlens_q: torch.Tensor,
                      cu_seqlens_k: torch.Tensor, causal: bool, scale: float, sliding_window: int | None,
                      block_tables: torch.Tensor | None, max_seqlen_q: int | None, max_seqlen_k: int | None,
                      out: torch.Tensor) -> None:
    """Writes ``out [total_q, H, D]``. ``max_seqlen_k`` is not needed (key ranges come from cu_seqlens_k)."""
    total_q, num_heads, head_dim = query.shape
    config = launch_config(head_dim)
    batch = cu_seqlens_q.shape[0] - 1
    if total_q == 0 or batch == 0:
        return
    if max_seqlen_q is None:
        max_seqlen_q = int((cu_seqlens_q[1:] - cu_seqlens_q[:-1]).max().item())
    if max_seqlen_q == 0:
        return
    paged = block_tables is not None
    num_kv_heads = key.shape[2] if paged else key.shape[1]
    if paged:
        k_strides = (key.stride(0), key.stride(1), key.stride(2))
        v_strides = (value.stride(0), value.stride(1), value.stride(2))
        bt, bt_stride, block_size = block_tables, block_tables.stride(0), key.shape[1]
    else:
        k_strides = (key.stride(0), 0, key.stride(1))
        v_strides = (value.stride(0), 0, value.stride(1))
        bt, bt_stride, block_size = cu_seqlens_k, 0, 1  # bt is an unused placeholder pointer
    grid = (triton.cdiv(max_seqlen_q, config["BLOCK_M"]), batch, num_heads)
    _prefill_kernel[grid](
        query, key, value, out, cu_seqlens_q, cu_seqlens_k, bt,
        query.stride(0), query.stride(1), *k_strides, *v_strides, out.stride(0), out.stride(1), bt_stride,
        scale * LOG2E, sliding_window or 0, block_size, num_heads // num_kv_heads, head_dim,
        CAUSAL=bool(causal), HAS_WINDOW=sliding_window is not None, PAGED=paged,
        DOT_PRECISION=dot_precision(query.dtype), **config)
