"""Paged decode attention: one query token per sequence against that sequence's paged KV cache.

Layout: ``query`` ``[num_seqs, num_heads, head_dim]`` (head_dim contiguous); ``key_cache`` and
``value_cache`` ``[num_blocks, block_size, num_kv_heads, head_dim]`` contiguous, in query's
dtype; ``block_tables`` ``[num_seqs, max_blocks_per_seq]`` int32 maps a sequence's logical block
``t // block_size`` to a physical block; ``context_lens`` ``[num_seqs]`` int32 counts the tokens
already in the cache, the current one included. The query sits at position ``context_len - 1``
and attends keys ``[max(0, context_len - sliding_window), context_len)``. Query head ``h`` reads
kv head ``h // (num_heads // num_kv_heads)`` (GQA/MQA). Softmax and sums run in float32.
"""

from __future__ import annotations

import torch

from . import _dispatch
from ._checks import FLOAT_DTYPES, check_out, check_positive_int, check_same_device, check_same_dtype, check_scale
from ._checks import check_shape, check_tensor
from ._tensor import view
from .prefill_attention import prefill_attention_reference
from .. import _native

_paged_decode_attention = _dispatch.op("paged_decode_attention")

CPU_HEAD_DIM_MULTIPLE = 16
CPU_MAX_HEAD_DIM = 256
CUDA_MAX_HEAD_DIM = 256
CUDA_MAX_GQA_GROUP = 16


def check_paged_metadata_values(
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    num_blocks: int,
    block_size: int,
    sliding_window: int | None = None,
    max_context_len: int | None = None,
) -> None:
    """Raises ValueError naming the argument when a context length is < 1, exceeds the block
    table's capacity or ``max_context_len``, or when a block the sequence attends is outside
    ``[0, num_blocks)``. Reads the tensors' values (a device sync on GPU)."""
    if context_lens.numel() == 0:
        return
    lens = context_lens.long()
    capacity = block_tables.shape[1] * block_size
    limit = capacity if max_context_len is None else min(capacity, max_context_len)
    bad = (lens < 1) | (lens > limit)
    if bad.any():
        s = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"context_lens[{s}] = {int(lens[s])} must be in [1, {limit}] (block table capacity: {capacity} tokens, "
            f"max_context_len: {max_context_len})"
        )
    first = (lens - sliding_window).clamp(min=0) if sliding_window is not None else torch.zeros_like(lens)
    cols = torch.arange(block_tables.shape[1], device=lens.device)
    used = (cols >= (first // block_size)[:, None]) & (cols <= ((lens - 1) // block_size)[:, None])
    bad = used & ((block_tables < 0) | (block_tables >= num_blocks))
    if bad.any():
        s, b = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"block_tables[{s}][{b}] = {int(block_tables[s, b])} is outside [0, {num_blocks}) (the key cache's num_blocks)"
        )


def paged_decode_attention_reference(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float | None = None,
    sliding_window: int | None = None,
    max_context_len: int | None = None,
) -> torch.Tensor:
    """The specification: decode is prefill with one query per sequence, sitting at position
    ``context_len - 1`` of its paged keys, so this defers to ``prefill_attention_reference``."""
    num_blocks, block_size = key_cache.shape[:2]
    scale = check_scale(scale, query.shape[-1])
    check_paged_metadata_values(block_tables, context_lens, num_blocks, block_size, sliding_window, max_context_len)
    num_seqs = query.shape[0]
    cu_seqlens_q = torch.arange(num_seqs + 1, dtype=torch.int32, device=query.device)
    cu_seqlens_k = torch.zeros(num_seqs + 1, dtype=torch.int32, device=query.device)
    cu_seqlens_k[1:] = context_lens.cumsum(0)
    return prefill_attention_reference(
        query, key_cache, value_cache, cu_seqlens_q, cu_seqlens_k, True, scale, sliding_window, block_tables=block_tables
    )


@_dispatch.traced_as_custom_op("paged_decode_attention")
def paged_decode_attention(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float | None = None,
    sliding_window: int | None = None,
    *,
    max_context_len: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of ``query [num_seqs, num_heads, head_dim]`` over each sequence's paged keys and
    values; returns ``out [num_seqs, num_heads, head_dim]`` in query's dtype (new unless given).

    ``scale`` defaults to ``head_dim ** -0.5``; ``sliding_window`` None attends every cached
    token; ``max_context_len`` (optional) is an upper bound on ``context_lens`` that GPU
    backends use to size their grids without reading ``context_lens``."""
    check_tensor("query", query, ndim=3, dtypes=FLOAT_DTYPES, last_dim_contiguous=True)
    num_seqs, num_heads, head_dim = query.shape
    for name, cache in (("key_cache", key_cache), ("value_cache", value_cache)):
        check_tensor(name, cache, ndim=4, contiguous=True)
        check_same_dtype(name, cache, "query", query)
        check_same_device(name, cache, "query", query)
        check_shape(name, cache, (None, None, None, head_dim))
    check_shape("value_cache", value_cache, tuple(key_cache.shape))
    num_blocks, block_size, num_kv_heads, _ = key_cache.shape
    if head_dim < 1 or block_size < 1:
        raise ValueError(f"head_dim and block_size must be positive, got key_cache shape {list(key_cache.shape)}")
    if num_kv_heads < 1 or num_heads < 1 or num_heads % num_kv_heads:
        raise ValueError(f"num_heads ({num_heads}) must be a positive multiple of num_kv_heads ({num_kv_heads})")
    check_tensor("block_tables", block_tables, ndim=2, dtypes=(torch.int32,), last_dim_contiguous=True)
    check_shape("block_tables", block_tables, (num_seqs, None))
    check_same_device("block_tables", block_tables, "query", query)
    check_tensor("context_lens", context_lens, ndim=1, dtypes=(torch.int32,), contiguous=True)
    check_shape("context_lens", context_lens, (num_seqs,))
    check_same_device("context_lens", context_lens, "query", query)
    scale = check_scale(scale, head_dim)
    check_positive_int("sliding_window", sliding_window, allow_none=True)
    check_positive_int("max_context_len", max_context_len, allow_none=True)
    if max_context_len is not None and max_context_len > block_tables.shape[1] * block_size:
        raise ValueError(
            f"max_context_len ({max_context_len}) exceeds the block table's capacity "
            f"({block_tables.shape[1]} blocks of {block_size} tokens)"
        )
    out = check_out(out, tuple(query.shape), query)
    if num_seqs == 0:
        return out
    _paged_decode_attention(
        query.device, query, key_cache, value_cache, block_tables, context_lens, scale, sliding_window, max_context_len, out
    )
    return out


# Backends: impl(query, key_cache, value_cache, block_tables, context_lens, scale, sliding_window,
# max_context_len, out), arguments validated above (values of block_tables/context_lens excepted).
@_paged_decode_attention.register("reference")
def _paged_decode_attention_ref(query, key_cache, value_cache, block_tables, context_lens, scale, sliding_window, max_context_len, out):
    out.copy_(
        paged_decode_attention_reference(
            query, key_cache, value_cache, block_tables, context_lens, scale, sliding_window, max_context_len
        )
    )


@_paged_decode_attention.register("cpu")
def _paged_decode_attention_cpu(query, key_cache, value_cache, block_tables, context_lens, scale, sliding_window, max_context_len, out):
    head_dim = query.shape[-1]
    if head_dim % CPU_HEAD_DIM_MULTIPLE or head_dim > CPU_MAX_HEAD_DIM:
        raise _dispatch.BackendUnsupported(
            f"paged_decode_attention: the cpu backend supports head_dim a multiple of {CPU_HEAD_DIM_MULTIPLE} "
            f"up to {CPU_MAX_HEAD_DIM}, got {head_dim}"
        )
    _native.cpu_module().paged_decode_attention(
        view(out), view(query), view(key_cache), view(value_cache), view(block_tables), view(context_lens),
        scale, sliding_window, max_context_len,
    )


@_paged_decode_attention.register("cuda")
def _paged_decode_attention_cuda(query, key_cache, value_cache, block_tables, context_lens, scale, sliding_window,
                                 max_context_len, out):
    head_dim, group = query.shape[-1], query.shape[1] // key_cache.shape[2]
    if head_dim > CUDA_MAX_HEAD_DIM or group > CUDA_MAX_GQA_GROUP:
        raise _dispatch.BackendUnsupported(
            f"paged_decode_attention: the cuda backend supports head_dim up to {CUDA_MAX_HEAD_DIM} and up to "
            f"{CUDA_MAX_GQA_GROUP} query heads per KV head, got {head_dim} and {group}"
        )
    if max_context_len is None:  # the grid size needs it on the host: one device sync
        max_context_len = int(context_lens.max())
    _native.cuda_module().paged_decode_attention(
        view(out), view(query), view(key_cache), view(value_cache), view(block_tables), view(context_lens), scale,
        sliding_window, max_context_len,
    )  # fmt: skip


_paged_decode_attention.register_lazy("triton", "inference_pio.kernels.paged_decode_attention:paged_decode_attention")


# torch.compile sees this custom op instead of the raw kernel call.
@torch.library.custom_op("inference_pio::paged_decode_attention", mutates_args=())
def _paged_decode_attention_op(
    query: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float | None,
    sliding_window: int | None,
    max_context_len: int | None,
) -> torch.Tensor:
    return paged_decode_attention(
        query, key_cache, value_cache, block_tables, context_lens, scale, sliding_window, max_context_len=max_context_len
    )


@_paged_decode_attention_op.register_fake
def _(query, key_cache, value_cache, block_tables, context_lens, scale, sliding_window, max_context_len):
    return torch.empty_like(query, memory_format=torch.contiguous_format)
