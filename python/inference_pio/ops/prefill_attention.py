"""Prefill (variable-length flash) attention over packed sequences.

Layout: ``query [total_q, num_heads, head_dim]``, ``key``/``value [total_k, num_kv_heads, head_dim]``
(last two dimensions contiguous, any token stride), float32/float16/bfloat16, all one dtype.
Sequence ``b`` owns query rows ``cu_seqlens_q[b]:cu_seqlens_q[b+1]`` and keys
``cu_seqlens_k[b]:cu_seqlens_k[b+1]`` (int32 ``[batch + 1]`` prefix sums starting at 0).
Paged mode: with ``block_tables [batch, max_blocks]`` (int32), key/value are the paged caches
``[num_blocks, block_size, num_kv_heads, head_dim]`` and key ``j`` of sequence ``b`` sits in block
``block_tables[b][j // block_size]`` at offset ``j % block_size``; only the lengths
``cu_seqlens_k[b+1] - cu_seqlens_k[b]`` are used then.

Masking is bottom-right aligned (like flash-attn): query ``i`` of a sequence with ``len_q`` queries and
``len_k`` keys sits at position ``p = len_k - len_q + i`` and sees key ``j`` iff ``j <= p`` (causal) and
``j > p - sliding_window`` (when a window is given). A query that sees no key outputs zeros.
Accumulation is float32 (float64 for float64 inputs in the reference); the output is rounded once.
"""

from __future__ import annotations

import torch

from . import _dispatch
from ._checks import FLOAT_DTYPES, check_out, check_same_device, check_scale, check_shape, check_tensor
from ._tensor import optional_view, view
from .. import _native

_prefill_attention = _dispatch.op("prefill_attention")

CPU_MAX_HEAD_DIM = 256


def _sequence_kv(cache: torch.Tensor, b: int, start: int, length: int, block_tables: torch.Tensor | None) -> torch.Tensor:
    """Keys (or values) ``[length, num_kv_heads, head_dim]`` of sequence ``b``, gathered from a paged cache if needed."""
    if block_tables is None:
        return cache[start : start + length]
    j = torch.arange(length, device=cache.device)
    block_size = cache.shape[1]
    blocks = block_tables[b].long()[j // block_size]
    return cache[blocks, j % block_size]


def prefill_attention_reference(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    causal: bool = True,
    scale: float | None = None,
    sliding_window: int | None = None,
    *,
    block_tables: torch.Tensor | None = None,
) -> torch.Tensor:
    """The specification: one sequence at a time, explicit mask, softmax in float32 (float64 for float64)."""
    acc = torch.promote_types(query.dtype, torch.float32)
    total_q, num_heads, head_dim = query.shape
    group = num_heads // key.shape[-2]
    scale = head_dim**-0.5 if scale is None else scale
    out = torch.zeros(query.shape, dtype=acc, device=query.device)
    cu_q, cu_k = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for b in range(len(cu_q) - 1):
        len_q, len_k = cu_q[b + 1] - cu_q[b], cu_k[b + 1] - cu_k[b]
        if len_q == 0 or len_k == 0:
            continue  # no visible key: the rows stay zero
        q = query[cu_q[b] : cu_q[b + 1]].to(acc)
        k = _sequence_kv(key, b, cu_k[b], len_k, block_tables).to(acc).repeat_interleave(group, dim=1)
        v = _sequence_kv(value, b, cu_k[b], len_k, block_tables).to(acc).repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) * scale
        pos = (len_k - len_q + torch.arange(len_q, device=query.device))[:, None]
        j = torch.arange(len_k, device=query.device)[None, :]
        visible = torch.ones(len_q, len_k, dtype=torch.bool, device=query.device)
        if causal:
            visible &= j <= pos
        if sliding_window is not None:
            visible &= j > pos - sliding_window
        probs = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1)
        probs = torch.where(visible.any(-1, keepdim=True), probs, 0.0)  # all-masked rows: zeros, not NaN
        out[cu_q[b] : cu_q[b + 1]] = torch.einsum("hqk,khd->qhd", probs, v)
    return out.to(query.dtype)


def _values_checkable(t: torch.Tensor) -> bool:
    """Reading index values costs a device sync on CUDA, which a CUDA graph capture forbids."""
    return t.device.type != "cuda" or not torch.cuda.is_current_stream_capturing()


def _check_cu_seqlens(name: str, cu: torch.Tensor, query: torch.Tensor, total: int | None) -> list[int] | None:
    check_tensor(name, cu, ndim=1, dtypes=(torch.int32,), contiguous=True)
    check_same_device(name, cu, "query", query)
    if cu.numel() == 0:
        raise ValueError(f"{name} must have batch + 1 >= 1 entries, got an empty tensor")
    if not _values_checkable(cu):
        return None
    values = cu.tolist()
    if values[0] != 0:
        raise ValueError(f"{name}[0] must be 0, got {values[0]}")
    for b in range(len(values) - 1):
        if values[b + 1] < values[b]:
            raise ValueError(f"{name} must be non-decreasing, got {values[b]} then {values[b + 1]} at index {b}")
    if total is not None and values[-1] != total:
        raise ValueError(f"{name}[-1] must equal the number of tokens ({total}), got {values[-1]}")
    return values


def _check_block_tables(block_tables: torch.Tensor, key: torch.Tensor, query: torch.Tensor, lens_k: list[int] | None) -> None:
    check_tensor("block_tables", block_tables, ndim=2, dtypes=(torch.int32,), contiguous=True)
    check_same_device("block_tables", block_tables, "query", query)
    if lens_k is None or not _values_checkable(block_tables):
        return
    check_shape("block_tables", block_tables, (len(lens_k), None))
    num_blocks, block_size = key.shape[0], key.shape[1]
    max_blocks = block_tables.shape[1]
    used = [-(-n // block_size) for n in lens_k]
    for b, n in enumerate(used):
        if n > max_blocks:
            raise ValueError(
                f"cu_seqlens_k: sequence {b} has {lens_k[b]} keys but block_tables has room for "
                f"{max_blocks} blocks of {block_size}"
            )
    in_use = torch.arange(max_blocks, device=block_tables.device)[None, :] < torch.tensor(used, device=block_tables.device)[:, None]
    bad = in_use & ((block_tables < 0) | (block_tables >= num_blocks))
    if bad.any():
        b, i = (int(x) for x in bad.nonzero()[0].tolist())
        raise ValueError(f"block_tables[{b}][{i}] = {int(block_tables[b, i])} is not a block id in [0, {num_blocks})")


def _check_hint(name: str, hint: object, lens: list[int] | None) -> int | None:
    """``max_seqlen_*`` are upper bounds GPU backends size grids with; derived from the lengths when omitted."""
    actual = max(lens, default=0) if lens is not None else None
    if hint is None:
        return actual
    if isinstance(hint, bool) or not isinstance(hint, int) or hint < 0:
        raise ValueError(f"{name} must be a non-negative int or None, got {hint!r}")
    if actual is not None and hint < actual:
        raise ValueError(f"{name} ({hint}) is smaller than the longest sequence ({actual})")
    return hint


def _lengths(values: list[int] | None) -> list[int] | None:
    return None if values is None else [values[b + 1] - values[b] for b in range(len(values) - 1)]


@_dispatch.traced_as_custom_op("prefill_attention")
def prefill_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    causal: bool = True,
    scale: float | None = None,
    sliding_window: int | None = None,
    *,
    block_tables: torch.Tensor | None = None,
    max_seqlen_q: int | None = None,
    max_seqlen_k: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of packed queries ``[total_q, num_heads, head_dim]`` over their sequences' keys.

    ``key``/``value``: ``[total_k, num_kv_heads, head_dim]``, or the paged caches
    ``[num_blocks, block_size, num_kv_heads, head_dim]`` when ``block_tables [batch, max_blocks]`` is given.
    ``num_heads % num_kv_heads == 0`` (query head ``h`` reads kv head ``h // (num_heads // num_kv_heads)``).
    ``scale`` defaults to ``head_dim ** -0.5``; ``sliding_window`` needs ``causal``. Returns ``out``
    ``[total_q, num_heads, head_dim]`` in query's dtype (new unless given).
    """
    check_tensor("query", query, ndim=3, dtypes=FLOAT_DTYPES, last_dim_contiguous=True)
    total_q, num_heads, head_dim = query.shape
    if query.stride(1) != head_dim and num_heads > 1:
        raise ValueError(f"query must have contiguous [num_heads, head_dim] rows, got strides {query.stride()}")
    paged = block_tables is not None
    for name, t in (("key", key), ("value", value)):
        if paged:
            check_tensor(name, t, ndim=4, dtypes=(query.dtype,), contiguous=True)
        else:
            check_tensor(name, t, ndim=3, dtypes=(query.dtype,), last_dim_contiguous=True)
            if t.stride(1) != head_dim and t.shape[1] > 1:
                raise ValueError(f"{name} must have contiguous [num_kv_heads, head_dim] rows, got strides {t.stride()}")
        check_same_device(name, t, "query", query)
    num_kv_heads = key.shape[-2]
    check_shape("key", key, tuple(key.shape[:-2]) + (num_kv_heads, head_dim))
    check_shape("value", value, tuple(key.shape))
    if num_kv_heads == 0 or num_heads % num_kv_heads:
        raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
    if head_dim == 0:
        raise ValueError("query must have head_dim > 0")
    if paged and key.shape[1] == 0:
        raise ValueError("key must have block_size > 0")
    if not isinstance(causal, bool):
        raise ValueError(f"causal must be a bool, got {causal!r}")
    scale = check_scale(scale, head_dim)
    if sliding_window is not None:
        if isinstance(sliding_window, bool) or not isinstance(sliding_window, int) or sliding_window <= 0:
            raise ValueError(f"sliding_window must be a positive int or None, got {sliding_window!r}")
        if not causal:
            raise ValueError("sliding_window requires causal=True")
    cu_q = _check_cu_seqlens("cu_seqlens_q", cu_seqlens_q, query, total_q)
    cu_k = _check_cu_seqlens("cu_seqlens_k", cu_seqlens_k, query, None if paged else key.shape[0])
    if cu_seqlens_k.numel() != cu_seqlens_q.numel():
        raise ValueError(
            f"cu_seqlens_k must have as many entries as cu_seqlens_q ({cu_seqlens_q.numel()}), got {cu_seqlens_k.numel()}"
        )
    lens_q, lens_k = _lengths(cu_q), _lengths(cu_k)
    if causal and lens_q is not None and lens_k is not None:
        for b, (lq, lk) in enumerate(zip(lens_q, lens_k)):
            if lk < lq:
                raise ValueError(f"causal attention needs len_k >= len_q, sequence {b} has {lq} queries and {lk} keys")
    if paged:
        _check_block_tables(block_tables, key, query, lens_k)
    max_seqlen_q = _check_hint("max_seqlen_q", max_seqlen_q, lens_q)
    max_seqlen_k = _check_hint("max_seqlen_k", max_seqlen_k, lens_k)
    out = check_out(out, (total_q, num_heads, head_dim), query)
    _prefill_attention(
        query.device, query, key, value, cu_seqlens_q, cu_seqlens_k, causal, scale, sliding_window,
        block_tables, max_seqlen_q, max_seqlen_k, out,
    )  # fmt: skip
    return out


# Backends: impl(query, key, value, cu_seqlens_q, cu_seqlens_k, causal, scale, sliding_window,
#                block_tables, max_seqlen_q, max_seqlen_k, out), arguments already validated.
@_prefill_attention.register("reference")
def _prefill_attention_ref(query, key, value, cu_q, cu_k, causal, scale, sliding_window, block_tables, max_q, max_k, out):
    out.copy_(prefill_attention_reference(query, key, value, cu_q, cu_k, causal, scale, sliding_window, block_tables=block_tables))


@_prefill_attention.register("cpu")
def _prefill_attention_cpu(query, key, value, cu_q, cu_k, causal, scale, sliding_window, block_tables, max_q, max_k, out):
    head_dim = query.shape[-1]
    if head_dim % 16 or head_dim > CPU_MAX_HEAD_DIM:
        raise _dispatch.BackendUnsupported(
            f"prefill_attention: the cpu kernel needs head_dim a multiple of 16 up to {CPU_MAX_HEAD_DIM}, got {head_dim}"
        )
    _native.cpu_module().prefill_attention(
        view(out), view(query), view(key), view(value), view(cu_q), view(cu_k), causal, scale, sliding_window,
        optional_view(block_tables),
    )  # fmt: skip


@_prefill_attention.register("cuda")
def _prefill_attention_cuda(query, key, value, cu_q, cu_k, causal, scale, sliding_window, block_tables, max_q, max_k, out):
    if query.shape[-1] > CPU_MAX_HEAD_DIM:
        raise _dispatch.BackendUnsupported(
            f"prefill_attention: the cuda kernel supports head_dim up to {CPU_MAX_HEAD_DIM}, got {query.shape[-1]}"
        )
    if max_q is None:  # the grid size needs it on the host: one device sync
        max_q = int((cu_q[1:] - cu_q[:-1]).max()) if cu_q.numel() > 1 else 0
    _native.cuda_module().prefill_attention(
        view(out), view(query), view(key), view(value), view(cu_q), view(cu_k), causal, scale, sliding_window,
        optional_view(block_tables), max_q,
    )  # fmt: skip


_prefill_attention.register_lazy("triton", "inference_pio.kernels.prefill_attention:prefill_attention")


# torch.compile sees this custom op instead of the raw kernel calls.
@torch.library.custom_op("inference_pio::prefill_attention", mutates_args=())
def _prefill_attention_op(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    causal: bool,
    scale: float | None,
    sliding_window: int | None,
    block_tables: torch.Tensor | None,
    max_seqlen_q: int | None,
    max_seqlen_k: int | None,
) -> torch.Tensor:
    return prefill_attention(
        query, key, value, cu_seqlens_q, cu_seqlens_k, causal, scale, sliding_window,
        block_tables=block_tables, max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k,
    )  # fmt: skip


@_prefill_attention_op.register_fake
def _(query, key, value, cu_seqlens_q, cu_seqlens_k, causal, scale, sliding_window, block_tables, max_seqlen_q, max_seqlen_k):
    return torch.empty(query.shape, dtype=query.dtype, device=query.device)
