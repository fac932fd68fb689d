"""Rotary position embedding (RoPE), in place on query and key.

Layout: ``query`` is ``[num_tokens, num_heads * head_dim]`` or ``[num_tokens, num_heads, head_dim]``
with heads and head_dim contiguous inside a token; the token stride may be anything (a slice of
a fused qkv projection). ``key`` is the same with ``num_kv_heads`` heads, or None.
``cos_sin_cache`` is ``[max_position, rotary_dim]`` (vLLM layout): cos in the first
``rotary_dim / 2`` columns, sin in the last; build it with ``rope_cache.build_cos_sin_cache``.
Only the first ``rotary_dim`` dims of each head rotate; the rest pass through untouched.
Math is float32 (float64 for float64 inputs); each output element is rounded once.
"""

from __future__ import annotations

import torch

from . import _dispatch
from ._checks import (FLOAT_DTYPES, INDEX_DTYPES, check_no_aliasing, check_positive_int, check_same_device,
                      check_same_dtype, check_shape, check_tensor)
from ._tensor import optional_view, view
from .. import _native

_rotary_embedding = _dispatch.op("rotary_embedding")


def _check_positions_in_range(positions: torch.Tensor, max_position: int) -> None:
    if positions.numel() == 0:
        return
    lo, hi = int(positions.min()), int(positions.max())
    if lo < 0 or hi >= max_position:
        bad = lo if lo < 0 else hi
        raise ValueError(f"positions contains {bad}, out of range [0, {max_position}) of cos_sin_cache")


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, rotary_dim: int, is_neox: bool) -> None:
    """Rotates ``x [tokens, heads, head_dim]`` in place; cos/sin are ``[tokens, 1, rotary_dim / 2]``."""
    rot = x[..., :rotary_dim]
    r = rot.to(cos.dtype)
    if is_neox:
        x1, x2 = r[..., : rotary_dim // 2], r[..., rotary_dim // 2 :]
        rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    else:
        x1, x2 = r[..., 0::2], r[..., 1::2]
        rotated = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    rot.copy_(rotated)


def rotary_embedding_reference(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
    head_dim: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool = True,
) -> None:
    """The specification, in place: each head's first ``rotary_dim`` dims rotate by the angle at
    ``positions[token]``. NeoX pairs ``x[i]`` with ``x[i + rotary_dim/2]``; GPT-J pairs ``x[2i]``
    with ``x[2i+1]``: ``(a, b) -> (a*cos - b*sin, b*cos + a*sin)`` in float32 (or float64)."""
    max_position, rotary_dim = cos_sin_cache.shape
    _check_positions_in_range(positions, max_position)
    acc = torch.promote_types(query.dtype, torch.float32)
    cs = cos_sin_cache[positions.long()].to(acc).unsqueeze(1)  # [tokens, 1, rotary_dim]
    cos, sin = cs[..., : rotary_dim // 2], cs[..., rotary_dim // 2 :]
    for x in (query, key):
        if x is not None:
            x3 = x if x.dim() == 3 else x.view(x.shape[0], x.shape[1] // head_dim, head_dim)
            _rotate(x3, cos, sin, rotary_dim, is_neox)


def _heads_3d(name: str, t: torch.Tensor, tokens: int | None, head_dim: int) -> torch.Tensor:
    """``t`` as [tokens, heads, head_dim] without copying, after checking the layout."""
    check_tensor(name, t, ndim=(2, 3), dtypes=FLOAT_DTYPES, last_dim_contiguous=True)
    if tokens is not None and t.shape[0] != tokens:
        raise ValueError(f"{name} must have {tokens} tokens (positions.shape[0]), got shape {list(t.shape)}")
    if t.dim() == 2:
        if t.shape[1] % head_dim:
            raise ValueError(f"{name}.shape[1] ({t.shape[1]}) must be num_heads * head_dim, a multiple of head_dim {head_dim}")
        return t.view(t.shape[0], t.shape[1] // head_dim, head_dim)
    if t.shape[2] != head_dim:
        raise ValueError(f"{name}.shape[2] must be head_dim {head_dim}, got shape {list(t.shape)}")
    if t.shape[1] > 1 and t.stride(1) != head_dim:
        raise ValueError(f"{name}: heads must be contiguous within a token, got strides {t.stride()} for shape {list(t.shape)}")
    return t


@_dispatch.traced_as_custom_op("rotary_embedding")
def rotary_embedding(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
    head_dim: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool = True,
) -> None:
    """In place RoPE on ``query`` and ``key`` (see the module docstring for layouts).

    positions: ``[num_tokens]`` int32/int64 in ``[0, max_position)`` (out of range: ValueError,
    nothing written). query/key: float32, float16 or bfloat16, same dtype. cos_sin_cache:
    ``[max_position, rotary_dim]`` contiguous, float32 or query's dtype, rotary_dim even and
    <= head_dim. is_neox: True rotates halves, False GPT-J interleaved pairs.
    query and key must not share elements with themselves (stride-0 tokens), each other or the
    other arguments (ValueError).
    """
    check_positive_int("head_dim", head_dim)
    if not isinstance(is_neox, bool):
        raise TypeError(f"is_neox must be a bool, got {type(is_neox).__name__}")
    check_tensor("positions", positions, ndim=1, dtypes=INDEX_DTYPES, contiguous=True)
    tokens = positions.shape[0]
    q3 = _heads_3d("query", query, tokens, head_dim)
    check_same_device("positions", positions, "query", query)
    k3 = None
    if key is not None:
        k3 = _heads_3d("key", key, tokens, head_dim)
        check_same_dtype("key", key, "query", query)
        check_same_device("key", key, "query", query)
    check_tensor("cos_sin_cache", cos_sin_cache, ndim=2, dtypes={torch.float32, query.dtype}, contiguous=True)
    check_same_device("cos_sin_cache", cos_sin_cache, "query", query)
    rotary_dim = cos_sin_cache.shape[1]
    if rotary_dim <= 0 or rotary_dim % 2 or rotary_dim > head_dim:
        raise ValueError(f"cos_sin_cache.shape[1] (rotary_dim) must be even, positive and <= head_dim {head_dim}, got {rotary_dim}")
    check_no_aliasing({"query": q3, "key": k3}, {"positions": positions, "cos_sin_cache": cos_sin_cache})
    _rotary_embedding(query.device, positions, q3, k3, cos_sin_cache, is_neox)


# Backends: impl(positions, query3d, key3d_or_None, cos_sin_cache, is_neox), validated.
@_rotary_embedding.register("reference")
def _rotary_embedding_ref(positions, query, key, cos_sin_cache, is_neox):
    rotary_embedding_reference(positions, query, key, query.shape[-1], cos_sin_cache, is_neox)


@_rotary_embedding.register("cpu")
def _rotary_embedding_cpu(positions, query, key, cos_sin_cache, is_neox):
    _native.cpu_module().rotary_embedding(view(positions), view(query), optional_view(key), view(cos_sin_cache), is_neox)


@_rotary_embedding.register("cuda")
def _rotary_embedding_cuda(positions, query, key, cos_sin_cache, is_neox):
    _native.cuda_module().rotary_embedding(view(positions), view(query), optional_view(key), view(cos_sin_cache), is_neox)


_rotary_embedding.register_lazy("triton", "inference_pio.kernels.rotary_embedding:rotary_embedding")


# torch.compile sees this custom op instead of the raw kernel call.
@torch.library.custom_op("inference_pio::rotary_embedding", mutates_args=("query", "key"))
def _rotary_embedding_op(
    positions: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor | None,
    head_dim: int,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> None:
    rotary_embedding(positions, query, key, head_dim, cos_sin_cache, is_neox)


@_rotary_embedding_op.register_fake
def _(positions, query, key, head_dim, cos_sin_cache, is_neox):
    return None
