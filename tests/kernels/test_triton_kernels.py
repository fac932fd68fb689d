"""Direct checks of the Triton backends (top-level kernels/<module>.py) against small float64 references,
through the interpreter on CPU tensors (or on a GPU when one is present). The shared op tests
(tests/ops/test_<op>.py) exercise the triton backend through the public ops; these keep the
kernel-specific cases: padded head dims, GQA, packed lengths, paging, split-K, partial rotary.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from inference_pio.ops._dispatch import BackendUnsupported, backend_runs_on
from ..ops.helpers import assert_close, poisoned_like, randn, device_under_test
from ..ops.tolerances import ATTENTION_TOLERANCES

_reason = backend_runs_on("triton", device_under_test())
pytestmark = pytest.mark.skipif(_reason is not None, reason=str(_reason))

if _reason is None:
    from inference_pio.kernels import activation, kv_cache, paged_decode_attention, prefill_attention, rms_norm, rotary_embedding

# bf16 tl.dot is wrong under the interpreter; bf16 is covered by the compile test and on GPUs.
DTYPES = [torch.float32, torch.float16]


def _ints(values, dtype=torch.int32) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype, device=device_under_test())


def _cu(lengths: list[int]) -> torch.Tensor:
    return _ints([0, *torch.tensor(lengths).cumsum(0).tolist()])


# ---------------------------------------------------------------- rms_norm (the op tests cover the rest)


@pytest.mark.parametrize("add_residual", [False, True])
def test_rms_norm_rows_wider_than_one_block(monkeypatch, add_residual):
    """Rows wider than MAX_BLOCK take the chunked two-pass path; a small MAX_BLOCK reaches it cheaply."""
    monkeypatch.setattr(rms_norm, "MAX_BLOCK", 64)
    x = randn(3, 200, dtype=torch.float16, scale=2.0)
    residual = randn(3, 200, dtype=torch.float16)
    w = randn(200, dtype=torch.float32)
    summed = (residual.double() + x.double()).to(torch.float16).double()
    source = summed if add_residual else x.double()
    expected = source * torch.rsqrt(source.pow(2).mean(-1, keepdim=True) + 1e-6) * w.double()
    if add_residual:
        rms_norm.fused_add_rms_norm(x, residual, w, 1e-6)
        assert_close(residual, summed, torch.float16)
        assert_close(x, expected, torch.float16)
    else:
        out = poisoned_like(x)
        rms_norm.rms_norm(x, w, 1e-6, out)
        assert_close(out, expected, torch.float16)


# ---------------------------------------------------------------- activation


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gate", ["silu", "none", "tanh"])
def test_gated_activation(dtype, gate):
    d = 1100  # two column blocks, the second partial
    x = randn(3, 2 * d + 6, dtype=dtype, scale=3.0)[:, : 2 * d]  # strided rows
    out = poisoned_like(x[:, :d].contiguous())
    if gate == "silu":
        activation.silu_and_mul(x, out)
        act = F.silu(x[:, :d].double())
    else:
        activation.gelu_and_mul(x, gate, out)
        act = F.gelu(x[:, :d].double(), approximate=gate)
    assert_close(out, act * x[:, d:].double(), dtype)


def test_gelu_rejects_unknown_approximation():
    x = randn(1, 8)
    with pytest.raises(BackendUnsupported, match="approximate"):
        activation.gelu_and_mul(x, "fast", torch.empty(1, 4, device=x.device))


# ---------------------------------------------------------------- rotary embedding


def _rotary_reference(positions, x, cache, is_neox):
    x = x.double().clone()
    rot = cache.shape[1]
    half = rot // 2
    cs = cache[positions.long()].double()
    cos, sin = cs[:, None, :half], cs[:, None, half:]
    first, second = (slice(0, half), slice(half, rot)) if is_neox else (slice(0, rot, 2), slice(1, rot, 2))
    x1, x2 = x[..., first].clone(), x[..., second].clone()
    x[..., first], x[..., second] = x1 * cos - x2 * sin, x2 * cos + x1 * sin
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("rot", [80, 32], ids=["full", "partial"])
@pytest.mark.parametrize("with_key", [True, False])
def test_rotary_embedding(dtype, is_neox, rot, with_key):
    tokens, heads, kv_heads, d = 5, 12, 4, 80  # 12 heads: one full and one partial block of 8
    qkv = randn(tokens, (heads + 2 * kv_heads) * d, dtype=dtype)
    before = qkv.clone()
    q = qkv[:, : heads * d].view(tokens, heads, d)  # token stride of the fused projection
    k = qkv[:, heads * d : (heads + kv_heads) * d].view(tokens, kv_heads, d)
    cache = randn(40, rot, dtype=torch.float32 if rot == 80 else dtype)
    positions = _ints([0, 39, 7, 7, 21], torch.int64 if with_key else torch.int32)
    expected_q = _rotary_reference(positions, q, cache, is_neox)
    expected_k = _rotary_reference(positions, k, cache, is_neox)
    rotary_embedding.rotary_embedding(positions, q, k if with_key else None, cache, is_neox)
    assert_close(q, expected_q, dtype)
    assert_close(k, expected_k if with_key else before[:, heads * d : (heads + kv_heads) * d].view_as(k).double(), dtype)
    assert torch.equal(qkv[:, (heads + kv_heads) * d :], before[:, (heads + kv_heads) * d :]), "value part was written"


# ---------------------------------------------------------------- reshape_and_cache


@pytest.mark.parametrize("slot_dtype", [torch.int32, torch.int64])
def test_reshape_and_cache(slot_dtype):
    tokens, kv_heads, d, num_blocks, block_size = 6, 2, 80, 4, 16
    kv = randn(tokens, 3 * kv_heads * d, dtype=torch.float16)  # k and v are slices of a fused qkv
    key = kv[:, : kv_heads * d].view(tokens, kv_heads, d)
    value = kv[:, kv_heads * d : 2 * kv_heads * d].view(tokens, kv_heads, d)
    key_cache = randn(num_blocks, block_size, kv_heads, d, dtype=torch.float16)
    value_cache = randn(num_blocks, block_size, kv_heads, d, dtype=torch.float16)
    slots = [3, 17, -1, 63, 0, 33]
    expected_k, expected_v = key_cache.clone().view(-1, kv_heads, d), value_cache.clone().view(-1, kv_heads, d)
    for t, s in enumerate(slots):
        if s >= 0:
            expected_k[s], expected_v[s] = key[t], value[t]
    kv_cache.reshape_and_cache(key, value, key_cache, value_cache, _ints(slots, slot_dtype))
    assert torch.equal(key_cache.view(-1, kv_heads, d), expected_k)
    assert torch.equal(value_cache.view(-1, kv_heads, d), expected_v)


# ---------------------------------------------------------------- attention


def _attention_reference(q, k, v, visible, scale):
    """q [Lq, H, D], k/v [Lk, KVH, D], visible [Lq, Lk] -> [Lq, H, D] float64; rows seeing nothing are 0."""
    group = q.shape[1] // k.shape[1]
    k = k.double().repeat_interleave(group, 1)
    v = v.double().repeat_interleave(group, 1)
    s = torch.einsum("qhd,khd->hqk", q.double(), k) * scale
    s = s.masked_fill(~visible, float("-inf"))
    w = torch.softmax(s, -1).nan_to_num(0.0)
    return torch.einsum("hqk,khd->qhd", w, v)


def _paged(k: torch.Tensor, lengths: list[int], block_size: int, num_blocks: int):
    """Scatters packed k [total, KVH, D] into a shuffled paged cache; returns (cache, block_tables)."""
    max_blocks = max(-(-n // block_size) for n in lengths)
    order = torch.randperm(num_blocks)[: len(lengths) * max_blocks].view(len(lengths), max_blocks)
    cache = randn(num_blocks, block_size, *k.shape[1:], dtype=k.dtype)
    start = 0
    for b, n in enumerate(lengths):
        for j in range(n):
            cache[order[b, j // block_size], j % block_size] = k[start + j]
        start += n
    return cache, order.to(torch.int32).to(k.device)


DECODE_CASES = [
    # dtype, head_dim, heads, kv_heads, sliding_window, partition_size (forces split-K)
    (torch.float32, 64, 8, 2, None, None),
    (torch.float16, 80, 8, 1, None, 16),
    (torch.float32, 64, 16, 4, 20, 32),
    (torch.float16, 64, 4, 1, 7, 16),
]


@pytest.mark.parametrize("dtype,head_dim,heads,kv_heads,window,partition", DECODE_CASES)
def test_paged_decode_attention(dtype, head_dim, heads, kv_heads, window, partition):
    lengths, block_size = [1, 17, 70], 16
    k = randn(sum(lengths), kv_heads, head_dim, dtype=dtype)
    v = randn(sum(lengths), kv_heads, head_dim, dtype=dtype)
    torch.manual_seed(len(lengths) + head_dim)
    key_cache, tables = _paged(k, lengths, block_size, 20)
    value_cache = torch.zeros_like(key_cache)
    start = 0
    for b, n in enumerate(lengths):  # the same block tables for values
        for j in range(n):
            value_cache[tables[b, j // block_size], j % block_size] = v[start + j]
        start += n
    q = randn(len(lengths), heads, head_dim, dtype=dtype)
    out = poisoned_like(q)
    scale = head_dim**-0.5
    paged_decode_attention.paged_decode_attention(
        q, key_cache, value_cache, tables, _ints(lengths), scale, window, None if partition else max(lengths), out,
        partition_size=partition)
    start = 0
    for b, n in enumerate(lengths):
        j = torch.arange(n)
        visible = (j >= n - window if window else j >= 0)[None, :].to(q.device)
        expected = _attention_reference(q[b : b + 1], k[start : start + n], v[start : start + n], visible, scale)
        assert_close(out[b : b + 1], expected, dtype, ATTENTION_TOLERANCES, msg=f"sequence {b}")
        start += n


PREFILL_CASES = [
    # dtype, head_dim, heads, kv_heads, causal, sliding_window, paged
    (torch.float32, 64, 4, 1, True, None, False),
    (torch.float16, 80, 8, 2, True, 5, False),
    (torch.float32, 64, 2, 2, False, None, False),
    (torch.float16, 64, 8, 1, False, 6, False),
    (torch.float16, 80, 4, 1, True, None, True),
    (torch.float32, 64, 8, 1, True, 9, True),
]


@pytest.mark.parametrize("dtype,head_dim,heads,kv_heads,causal,window,paged", PREFILL_CASES)
def test_prefill_attention(dtype, head_dim, heads, kv_heads, causal, window, paged):
    # Sequence lengths 1 and 17 packed together, one with earlier context (len_k > len_q) and one
    # with fewer keys than queries (its first causal rows see no key and must be zeros).
    len_q, len_k = [1, 17, 5], [1, 20, 3]
    q = randn(sum(len_q), heads, head_dim, dtype=dtype)
    k = randn(sum(len_k), kv_heads, head_dim, dtype=dtype)
    v = randn(sum(len_k), kv_heads, head_dim, dtype=dtype)
    out = poisoned_like(q)
    scale = head_dim**-0.5
    if paged:
        torch.manual_seed(head_dim)
        key_arg, tables = _paged(k, len_k, 16, 8)
        torch.manual_seed(head_dim)  # the same shuffle: values share the block tables
        value_arg, _ = _paged(v, len_k, 16, 8)
    else:
        key_arg, value_arg, tables = k, v, None
    prefill_attention.prefill_attention(q, key_arg, value_arg, _cu(len_q), _cu(len_k), causal, scale, window, tables,
                                        None, None, out)
    q0 = k0 = 0
    for b, (lq, lk) in enumerate(zip(len_q, len_k)):
        pos = torch.arange(lq)[:, None] + lk - lq
        j = torch.arange(lk)[None, :]
        visible = torch.ones(lq, lk, dtype=torch.bool)
        if causal:
            visible &= j <= pos
        if window:
            visible &= j > pos - window
        expected = _attention_reference(q[q0 : q0 + lq], k[k0 : k0 + lk], v[k0 : k0 + lk], visible.to(q.device), scale)
        assert_close(out[q0 : q0 + lq], expected, dtype, ATTENTION_TOLERANCES, msg=f"sequence {b}")
        q0, k0 = q0 + lq, k0 + lk


def test_attention_rejects_head_dims_above_256():
    q = randn(1, 1, 512)
    with pytest.raises(BackendUnsupported, match="head dim 512"):
        prefill_attention.prefill_attention(q, q, q, _cu([1]), _cu([1]), True, 1.0, None, None, 1, 1, q.clone())
    cache = randn(1, 16, 1, 512)
    with pytest.raises(BackendUnsupported, match="head dim 512"):
        paged_decode_attention.paged_decode_attention(q, cache, cache, _ints([[0]]), _ints([1]), 1.0, None, 1, q.clone())
