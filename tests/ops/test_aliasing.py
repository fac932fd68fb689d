"""In-place ops refuse outputs that alias themselves, each other or an input, in every backend
(the check is in the shared validation), and write nothing when they refuse. Disjoint views of one
buffer (q and k of a fused qkv row, two halves of one allocation) are accepted and computed right."""

from __future__ import annotations

import pytest
import torch

from inference_pio import ops
from inference_pio.ops._checks import _overlap, _overlaps_itself
from inference_pio.ops.rope_cache import build_cos_sin_cache

from .helpers import assert_close, device_under_test, randn

BACKENDS = ["reference", "cpu", "triton", "cuda"]  # refusal happens before dispatch: any name may be forced


def _refuses(backend, call, written, match):
    before = [t.clone() for t in written]
    with ops.use_backend(backend), pytest.raises(ValueError, match=match):
        call()
    for t, b in zip(written, before):
        assert torch.equal(t, b), "an op that refuses its arguments must write nothing"


# ----- fused_add_rms_norm -----

@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_add_rms_norm_refuses_aliased_x_and_residual(backend):
    hidden = 64
    w = randn(hidden)
    row = randn(1, hidden)
    buf, wide = randn(6, hidden), randn(4, hidden + 32)
    cases = {
        "x stride-0 rows": (row.expand(4, hidden), randn(4, hidden), r"x has overlapping elements"),
        "residual stride-0 rows": (randn(4, hidden), row.expand(4, hidden), r"residual has overlapping elements"),
        "same tensor": (buf[:4], buf[:4], r"x and residual share memory"),
        "overlapping rows": (buf[:4], buf[2:6], r"x and residual share memory"),
        "overlapping columns": (wide[:, :hidden], wide[:, 32:], r"x and residual share memory"),
    }
    for x, residual, match in cases.values():
        _refuses(backend, lambda: ops.fused_add_rms_norm(x, residual, w, 1e-5), [buf, row, wide], match)
    x = randn(4, hidden)
    _refuses(backend, lambda: ops.fused_add_rms_norm(x, randn(4, hidden), x[1], 1e-5), [x],
             r"x and weight share memory")


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_fused_add_rms_norm_accepts_disjoint_views_of_one_buffer(backend):
    buf = randn(4, 2 * 96, scale=2.0)
    x, residual = buf[:, :96], buf[:, 96:]  # interleaved rows of one allocation, no element shared
    w = randn(96)
    x64, r64 = x.double().clone(), residual.double().clone()
    with ops.use_backend(backend):
        ops.fused_add_rms_norm(x, residual, w, 1e-5)
    ops.fused_add_rms_norm_reference(x64, r64, w.double(), 1e-5)
    assert_close(residual, r64, torch.float32)
    assert_close(x, x64, torch.float32)


# ----- rotary_embedding -----

def _rope_args(tokens=5, heads=4, kv_heads=2, head_dim=16):
    cache = build_cos_sin_cache(head_dim, 32, 10000.0, dtype=torch.float32, device="cpu")
    positions = torch.arange(tokens, dtype=torch.int64)
    return positions, cache, heads * head_dim, kv_heads * head_dim, head_dim


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotary_embedding_refuses_aliased_query_and_key(backend):
    positions, cache, q_size, kv_size, d = _rope_args()
    qkv = randn(5, q_size + 2 * kv_size)
    q, k = qkv[:, :q_size], qkv[:, q_size:q_size + kv_size]
    one = randn(1, q_size)
    for query, key, match in (
        (q, q[:, :kv_size], r"query and key share memory"),
        (q, qkv[:, q_size - d:q_size - d + kv_size], r"query and key share memory"),  # one head shared
        (one.expand(5, q_size), None, r"query has overlapping elements"),
        (q, qkv[:1, q_size:q_size + kv_size].expand(5, kv_size), r"key has overlapping elements"),
    ):
        _refuses(backend, lambda: ops.rotary_embedding(positions, query, key, d, cache), [qkv, one], match)
    memory = randn(32 * d + 5 * q_size)  # a cos/sin table whose second half is also the query
    table, query = memory[:32 * d].view(32, d), memory[16 * d:16 * d + 5 * q_size].view(5, q_size)
    _refuses(backend, lambda: ops.rotary_embedding(positions, query, None, d, table), [memory],
             r"query and cos_sin_cache share memory")


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_rotary_embedding_accepts_q_and_k_of_one_qkv_row(backend):
    positions, cache, q_size, kv_size, d = _rope_args()
    qkv = randn(5, q_size + 2 * kv_size)
    q, k = qkv[:, :q_size], qkv[:, q_size:q_size + kv_size]
    q64, k64 = q.double().clone(), k.double().clone()
    v_before = qkv[:, q_size + kv_size:].clone()
    with ops.use_backend(backend):
        ops.rotary_embedding(positions, q, k, d, cache)
    ops.rotary_embedding_reference(positions, q64, k64, d, cache.double())
    assert_close(q, q64, torch.float32)
    assert_close(k, k64, torch.float32)
    assert torch.equal(qkv[:, q_size + kv_size:], v_before)


# ----- reshape_and_cache -----

@pytest.mark.parametrize("backend", BACKENDS)
def test_reshape_and_cache_refuses_aliased_caches(backend):
    key, value = randn(3, 2, 16), randn(3, 2, 16)
    cache = randn(4, 8, 2, 16)
    other = randn(4, 8, 2, 16)
    slots = torch.tensor([0, 5, 9])
    _refuses(backend, lambda: ops.reshape_and_cache(key, value, cache, cache, slots), [cache],
             r"key_cache and value_cache share memory")
    inside = cache[0, :3]  # the new keys are rows of the cache they are written into
    _refuses(backend, lambda: ops.reshape_and_cache(inside, value, cache, other, slots), [cache, other],
             r"key_cache and key share memory")


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_reshape_and_cache_accepts_one_cache_written_with_one_tensor(backend):
    rows = randn(3, 1, 16)  # DeepSeek's latent cache: the same rows into the same cache
    cache = torch.full((2, 4, 1, 16), float("nan"))
    with ops.use_backend(backend):
        ops.reshape_and_cache(rows, rows, cache, cache, torch.tensor([0, 3, 6]))
    assert torch.equal(cache.view(-1, 1, 16)[[0, 3, 6]], rows)


# ----- the overlap test itself -----

def test_overlap_is_exact_on_row_layouts():
    buf = torch.zeros(6, 96)
    q, k, v = buf[:, :64], buf[:, 64:80], buf[:, 80:]
    assert not _overlap(q, k) and not _overlap(k, v) and not _overlap(q, v)
    assert _overlap(q, buf[:, 63:65]) and _overlap(buf[1:2], buf[:, 5:6]) and not _overlap(buf[1:2], buf[2:, 5:6])
    assert not _overlap(buf[0], buf[1]) and _overlap(buf, buf[3])
    assert _overlaps_itself(buf[:1].expand(3, 96)) and not _overlaps_itself(q)
    assert _overlaps_itself(buf.view(-1).as_strided((4, 64), (32, 1)))  # rows of 64 every 32
    assert not _overlap(torch.zeros(3), torch.zeros(3))


def test_device_under_test_is_checked_too():
    dev = device_under_test()
    x = torch.randn(1, 32, device=dev).expand(3, 32)
    with pytest.raises(ValueError, match="x has overlapping elements"):
        ops.fused_add_rms_norm(x, torch.randn(3, 32, device=dev), torch.ones(32, device=dev), 1e-5)
