"""Attention of absorbed queries over the paged latent cache (multi-query, values inside the keys).

Each cached row is ``[k_rope (R), c_kv (L)]``; an absorbed query row per head is
``[q_rope (R), q_nope @ W_UK (L)]``, so ``q . row`` is exactly MLA's ``q . k`` and the attention
output over the rows' last ``L`` dims is the latent the value projection ``W_UV`` expands.

With the row as both key and value, this is plain MQA and runs on ``prefill_attention`` /
``paged_decode_attention`` (the first ``R`` output dims are computed and dropped). Their kernels
take head dims that are multiples of 16 up to 256; real DeepSeek rows (576 = 64 + 512) are wider,
and those run in plain torch on the gathered latent instead (``latent_attention_torch``), which
reads each cached row once for all heads instead of repeating it per head like the ops'
reference backend would.
"""

from __future__ import annotations

import torch

from inference_pio.ops.kv_cache import reshape_and_cache
from inference_pio.ops.paged_decode_attention import CPU_HEAD_DIM_MULTIPLE, CPU_MAX_HEAD_DIM, paged_decode_attention
from inference_pio.ops.prefill_attention import prefill_attention


def kernels_support(row_dim: int) -> bool:
    """Whether the attention kernels (cpu and triton) take heads of ``row_dim``."""
    return row_dim % CPU_HEAD_DIM_MULTIPLE == 0 and row_dim <= CPU_MAX_HEAD_DIM


def write_latent(rows: torch.Tensor, cache: torch.Tensor, meta) -> None:
    """``rows [T, 1, D]`` -> ``cache [num_blocks, block_size, 1, D]`` at ``meta.slot_mapping``.

    The cache is its own value cache, so the row is passed as both key and value (written twice
    to the same slot: one row per token and layer, negligible next to the projections)."""
    reshape_and_cache(rows, rows, cache, cache, meta.slot_mapping)


def paged_latent_attention(query: torch.Tensor, cache: torch.Tensor, meta, scale: float, out: torch.Tensor,
                           use_kernels: bool) -> torch.Tensor:
    """``query [T, H, D]`` (absorbed), ``cache [num_blocks, block_size, 1, D]`` -> ``out [T, H, D]``.

    Causal over each sequence's cached rows (the step's rows must already be written).
    """
    if not use_kernels:
        return latent_attention_torch(query, cache, meta, scale, out)
    if meta.is_decode:
        return paged_decode_attention(query, cache, cache, meta.block_tables, meta.context_lens, scale,
                                      max_context_len=meta.max_seqlen_k, out=out)
    return prefill_attention(query, cache, cache, meta.cu_seqlens_q, meta.cu_seqlens_k, True, scale,
                             block_tables=meta.block_tables, max_seqlen_q=meta.max_seqlen_q,
                             max_seqlen_k=meta.max_seqlen_k, out=out)


def latent_attention_torch(query: torch.Tensor, cache: torch.Tensor, meta, scale: float,
                           out: torch.Tensor) -> torch.Tensor:
    """The torch path: scores of every head against each cached row (gathered once, not per head),
    causal (bottom-right aligned) softmax in float32, weighted sum of the rows.

    Decode steps run batched over the sequences (rows padded to the longest context, masked);
    other steps go sequence by sequence, reading ``cu_seqlens_q`` / ``context_lens`` on the host.
    """
    if meta.is_decode:
        return _decode_torch(query, cache, meta, scale, out)
    block_size, dim = cache.shape[1], cache.shape[-1]
    rows_all = cache.view(-1, dim)
    cu_q = meta.cu_seqlens_q.tolist()
    lens_k = meta.context_lens.tolist()
    tables = meta.block_tables
    acc = torch.promote_types(query.dtype, torch.float32)
    for b, len_k in enumerate(lens_k):
        q0, q1 = cu_q[b], cu_q[b + 1]
        pos = torch.arange(len_k, device=cache.device)
        slots = tables[b, : -(-len_k // block_size)].long().repeat_interleave(block_size)[:len_k] * block_size
        rows = rows_all.index_select(0, slots + pos % block_size).to(acc)  # [len_k, D]
        q = query[q0:q1].to(acc)  # [len_q, H, D]
        scores = torch.einsum("qhd,kd->hqk", q, rows) * scale
        q_pos = (len_k - (q1 - q0) + torch.arange(q1 - q0, device=cache.device))[:, None]
        scores.masked_fill_(pos[None, :] > q_pos, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out[q0:q1] = torch.einsum("hqk,kd->qhd", probs, rows).to(out.dtype)
    return out


def _decode_torch(query: torch.Tensor, cache: torch.Tensor, meta, scale: float, out: torch.Tensor) -> torch.Tensor:
    """One query per sequence: ``[S, H, D]`` against its rows gathered block-wise to ``[S, K, D]``."""
    block_size, dim = cache.shape[1], cache.shape[-1]
    num_blocks = -(-meta.max_seqlen_k // block_size)
    acc = torch.promote_types(query.dtype, torch.float32)
    tables = meta.block_tables[:, :num_blocks].long()  # padding ids are valid blocks; their rows are masked
    rows = cache[tables].view(tables.shape[0], num_blocks * block_size, dim).to(acc)
    scores = torch.einsum("shd,skd->shk", query.to(acc), rows) * scale
    beyond = torch.arange(rows.shape[1], device=cache.device)[None, :] >= meta.context_lens[:, None]
    probs = torch.softmax(scores.masked_fill_(beyond[:, None, :], float("-inf")), dim=-1)
    return out.copy_(torch.einsum("shk,skd->shd", probs, rows))
