"""Decode attention over a paged KV cache (Triton): one query token per sequence.

Backend convention (see inference_pio.ops.paged_decode_attention):
``paged_decode_attention(query [B, H, D], key_cache, value_cache [num_blocks, block_size, KVH, D],
block_tables [B, max_blocks] int32, context_lens [B] int32, scale, sliding_window, max_context_len, out [B, H, D])``.
The query sits at position ctx-1 and attends keys [max(0, ctx - window), ctx).

One program per (sequence, KV head, context partition): the H/KVH query heads of a GQA group are
the rows of one tl.dot, so each KV block is read once per group. Long contexts are split into
partitions (split-K) whose partial results a second kernel merges by their softmax statistics.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import (LOG2E, check_head_dim, dot_precision, for_interpreter, load_kv_tile, normalized,
                      online_softmax_step, softmax_start, unsupported)

OP = "paged_decode_attention"
DEFAULT_PARTITION = 512
MAX_GROUP = 128  # query heads per KV head that fit the rows of one program
# Split-K pays off when (sequences x KV heads) programs cannot fill the GPU, or contexts are long.
SPLIT_BELOW_PROGRAMS = 256
SPLIT_ABOVE_CONTEXT = 8192
REDUCE_BLOCK_P = 32


@triton.jit
def _decode_kernel(q_ptr, kc_ptr, vc_ptr, bt_ptr, ctx_ptr, out_ptr, part_out_ptr, part_m_ptr, part_l_ptr,
                   q_stride_b, q_stride_h, kc_stride_blk, kc_stride_slot, kc_stride_h,
                   vc_stride_blk, vc_stride_slot, vc_stride_h, bt_stride, out_stride_b, out_stride_h,
                   qk_scale, window, block_size, group, head_dim, num_heads, num_partitions,
                   HAS_WINDOW: tl.constexpr, SPLIT: tl.constexpr, PARTITION: tl.constexpr,
                   BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    kvh = tl.program_id(1)
    part = tl.program_id(2)
    ctx = tl.load(ctx_ptr + b)
    lo = 0
    if HAS_WINDOW:
        lo = tl.maximum(ctx - window, 0)
    hi = ctx
    if SPLIT:
        lo = tl.maximum(lo, part * PARTITION)
        hi = tl.minimum(hi, (part + 1) * PARTITION)

    g = tl.arange(0, BLOCK_G)
    heads = kvh * group + g
    d = tl.arange(0, BLOCK_D)
    q_mask = (g[:, None] < group) & (d[None, :] < head_dim)
    q = tl.load(q_ptr + b * q_stride_b + heads[:, None] * q_stride_h + d[None, :], mask=q_mask, other=0.0)

    m, l, acc = softmax_start(BLOCK_G, BLOCK_D)
    for n0 in range(lo, hi, BLOCK_N):
        j = n0 + tl.arange(0, BLOCK_N)
        j_mask = j < hi
        block = tl.load(bt_ptr + b * bt_stride + j // block_size, mask=j_mask, other=0).to(tl.int64)
        slot = j % block_size
        k_tok = block * kc_stride_blk + slot * kc_stride_slot + kvh * kc_stride_h
        v_tok = block * vc_stride_blk + slot * vc_stride_slot + kvh * vc_stride_h
        kt, v = load_kv_tile(kc_ptr, vc_ptr, k_tok, v_tok, j_mask, d, head_dim)
        s = tl.dot(q, kt, input_precision=DOT_PRECISION) * qk_scale
        s = tl.where(j_mask[None, :], s, float("-inf"))
        m, l, acc = online_softmax_step(s, v, m, l, acc, DOT_PRECISION)

    o = normalized(acc, l)
    if SPLIT:
        # Workspace rows are (b, head, partition); empty partitions store m=-inf, l=0 (weight 0).
        row = (b * num_heads + heads) * num_partitions + part
        tl.store(part_out_ptr + row[:, None] * BLOCK_D + d[None, :], o, mask=q_mask)
        tl.store(part_m_ptr + row, m, mask=g < group)
        tl.store(part_l_ptr + row, l, mask=g < group)
    else:
        tl.store(out_ptr + b * out_stride_b + heads[:, None] * out_stride_h + d[None, :],
                 o.to(out_ptr.dtype.element_ty), mask=q_mask)


@triton.jit
def _merge_partitions_kernel(part_out_ptr, part_m_ptr, part_l_ptr, out_ptr, out_stride_b, out_stride_h,
                             num_heads, num_partitions, head_dim, BLOCK_P: tl.constexpr, BLOCK_D: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    base = (b * num_heads + h) * num_partitions
    p = tl.arange(0, BLOCK_P)
    d = tl.arange(0, BLOCK_D)
    m_max = float("-inf")
    for p0 in range(0, num_partitions, BLOCK_P):
        m = tl.load(part_m_ptr + base + p0 + p, mask=p0 + p < num_partitions, other=float("-inf"))
        m_max = tl.maximum(m_max, tl.max(m, 0))
    total = tl.zeros([BLOCK_D], dtype=tl.float32)
    weight_sum = 0.0
    for p0 in range(0, num_partitions, BLOCK_P):
        p_mask = p0 + p < num_partitions
        m = tl.load(part_m_ptr + base + p0 + p, mask=p_mask, other=float("-inf"))
        l = tl.load(part_l_ptr + base + p0 + p, mask=p_mask, other=0.0)
        w = l * tl.exp2(m - m_max)  # empty partitions: l = 0 and exp2(-inf) = 0
        o = tl.load(part_out_ptr + (base + p0 + p)[:, None] * BLOCK_D + d[None, :],
                    mask=p_mask[:, None] & (d[None, :] < head_dim), other=0.0)
        total += tl.sum(w[:, None] * o, 0)
        weight_sum += tl.sum(w, 0)
    tl.store(out_ptr + b * out_stride_b + h * out_stride_h + d, (total / weight_sum).to(out_ptr.dtype.element_ty),
             mask=d < head_dim)


def launch_config(head_dim: int, group: int, partition: int, interpret: bool | None = None) -> dict:
    """Block sizes and warps of ``_decode_kernel`` (also used by the compile tests)."""
    block_d = check_head_dim(OP, head_dim)
    block_n = 16 if for_interpreter(interpret) else (32 if block_d > 128 else 64)
    return dict(BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_N=min(block_n, partition), BLOCK_D=block_d,
                num_warps=8 if block_d > 128 else 4)


def paged_decode_attention(query: torch.Tensor, key_cache: torch.Tensor, value_cache: torch.Tensor,
                           block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float,
                           sliding_window: int | None, max_context_len: int | None, out: torch.Tensor,
                           *, partition_size: int | None = None) -> None:
    """Writes ``out [B, H, D]``. ``partition_size`` (tests, tuning) forces split-K with that many
    tokens per partition whenever the longest context exceeds it."""
    batch, num_heads, head_dim = query.shape
    num_kv_heads, block_size = key_cache.shape[2], key_cache.shape[1]
    check_head_dim(OP, head_dim)
    group = num_heads // num_kv_heads
    if group > MAX_GROUP:
        raise unsupported(OP, f"{group} query heads per KV head > {MAX_GROUP}")
    if batch == 0:
        return
    if max_context_len is None:
        max_context_len = int(context_lens.max().item())
    partition = partition_size or DEFAULT_PARTITION
    if partition % 16 != 0:
        raise unsupported(OP, f"partition_size must be a multiple of 16, got {partition}")
    num_partitions = triton.cdiv(max_context_len, partition)
    split = num_partitions > 1 and (partition_size is not None or batch * num_kv_heads < SPLIT_BELOW_PROGRAMS
                                    or max_context_len > SPLIT_ABOVE_CONTEXT)
    if not split:
        num_partitions = 1
    config = launch_config(head_dim, group, partition)
    block_d = config["BLOCK_D"]
    if split:
        part_out = torch.empty(batch, num_heads, num_partitions, block_d, dtype=torch.float32, device=query.device)
        part_m = torch.empty(batch, num_heads, num_partitions, dtype=torch.float32, device=query.device)
        part_l = torch.empty_like(part_m)
    else:
        part_out = part_m = part_l = out  # unused placeholders (SPLIT=False never touches them)
    _decode_kernel[(batch, num_kv_heads, num_partitions)](
        query, key_cache, value_cache, block_tables, context_lens, out, part_out, part_m, part_l,
        query.stride(0), query.stride(1), key_cache.stride(0), key_cache.stride(1), key_cache.stride(2),
        value_cache.stride(0), value_cache.stride(1), value_cache.stride(2), block_tables.stride(0),
        out.stride(0), out.stride(1), scale * LOG2E, sliding_window or 0, block_size, group, head_dim,
        num_heads, num_partitions,
        HAS_WINDOW=sliding_window is not None, SPLIT=split, PARTITION=partition,
        DOT_PRECISION=dot_precision(query.dtype), **config)
    if split:
        _merge_partitions_kernel[(batch, num_heads)](
            part_out, part_m, part_l, out, out.stride(0), out.stride(1), num_heads, num_partitions, head_dim,
            BLOCK_P=REDUCE_BLOCK_P, BLOCK_D=block_d, num_warps=4)
