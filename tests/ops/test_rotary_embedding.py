"""rotary_embedding: every backend against the float64 reference, in place.

The rotated part of each head is compared with the reference; everything the op must not
touch (dims past rotary_dim, neighbouring columns of a fused qkv buffer) is NaN-poisoned
before the call and must come back bit-identical.
"""

import functools
import itertools

import pytest
import torch

from inference_pio import ops
from inference_pio.ops.rope_cache import build_cos_sin_cache
from inference_pio.ops.rotary_embedding import rotary_embedding, rotary_embedding_reference
from .helpers import FLOAT_DTYPES, assert_close, randn, runnable_backends, skip_if_interpreted_and_large
from .helpers import device_under_test as _device

BACKENDS = runnable_backends("rotary_embedding")
MAX_POSITION = 4096
_INT_OF_SIZE = {2: torch.int16, 4: torch.int32, 8: torch.int64}


@functools.cache
def _cache(rotary_dim: int, dtype: torch.dtype) -> torch.Tensor:
    return build_cos_sin_cache(rotary_dim, MAX_POSITION, base=10000.0, dtype=dtype, device=_device())


def _positions(tokens: int, dtype=torch.int64) -> torch.Tensor:
    return torch.randint(0, MAX_POSITION, (tokens,), dtype=dtype, device=_device())


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(_INT_OF_SIZE[t.element_size()]).clone()


def _poison_tail(x3: torch.Tensor, rotary_dim: int) -> None:
    x3[..., rotary_dim:] = float("nan")


def _run_and_check(backend, positions, query, key, head_dim, cache, is_neox):
    """Runs the op on ``query``/``key`` in place; the rotary parts must match the float64
    reference, the NaN-poisoned dims past rotary_dim must keep their bits."""
    rotary_dim = cache.shape[1]
    tokens = positions.shape[0]
    q3 = query.view(tokens, -1, head_dim)
    k3 = None if key is None else key.view(tokens, -1, head_dim)
    for x3 in (q3, k3):
        if x3 is not None:
            _poison_tail(x3, rotary_dim)
    q64 = query.double()
    k64 = None if key is None else key.double()
    rotary_embedding_reference(positions, q64, k64, head_dim, cache.double(), is_neox)
    tails_before = [_bits(x3[..., rotary_dim:]) for x3 in (q3, k3) if x3 is not None]
    with ops.use_backend(backend):
        rotary_embedding(positions, query, key, head_dim, cache, is_neox)
    for name, x3, x64 in (("query", q3, q64), ("key", k3, k64)):
        if x3 is not None:
            expected = x64.view(tokens, -1, head_dim)[..., :rotary_dim]
            assert_close(x3[..., :rotary_dim], expected, query.dtype, msg=f"{name} rotary part differs")
    tails_after = [_bits(x3[..., rotary_dim:]) for x3 in (q3, k3) if x3 is not None]
    for before, after in zip(tails_before, tails_after):
        assert torch.equal(before, after), "dims past rotary_dim were written"


# Every head_dim x (heads, kv_heads) x tokens; the layout alternates so both meet every size
# at half the cost (the dtype test below runs both layouts on every case).
SHAPE_CASES = [
    pytest.param(head_dim, heads, kv_heads, tokens, (i + i // 4) % 2 == 0, id=f"d{head_dim}-h{heads}kv{kv_heads}-t{tokens}")
    for i, (head_dim, (heads, kv_heads), tokens) in enumerate(
        itertools.product([64, 80, 96, 128, 256], [(32, 32), (32, 8), (14, 2), (8, 1)], [1, 7, 17, 128])
    )
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("head_dim, num_heads, num_kv_heads, tokens, is_neox", SHAPE_CASES)
def test_shapes_match_reference(backend, head_dim, num_heads, num_kv_heads, tokens, is_neox):
    skip_if_interpreted_and_large(backend, tokens * (num_heads + num_kv_heads) * head_dim)
    query = randn(tokens, num_heads * head_dim, scale=2.0)
    key = randn(tokens, num_kv_heads * head_dim, scale=2.0)
    _run_and_check(backend, _positions(tokens), query, key, head_dim, _cache(head_dim, torch.float32), is_neox)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("rotary_fraction", [1.0, 0.5, 0.25])
@pytest.mark.parametrize("cache_fp32", [True, False], ids=["cache_fp32", "cache_same"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("head_dim", [64, 80, 128, 256])
def test_dtypes_and_partial_rotary(backend, head_dim, dtype, cache_fp32, rotary_fraction, is_neox):
    tokens, num_heads, num_kv_heads = 17, 14, 2
    skip_if_interpreted_and_large(backend, tokens * (num_heads + num_kv_heads) * head_dim)
    rotary_dim = int(head_dim * rotary_fraction)
    cache = _cache(rotary_dim, torch.float32 if cache_fp32 else dtype)
    query = randn(tokens, num_heads, head_dim, dtype=dtype, scale=2.0)  # the 3-D form
    key = randn(tokens, num_kv_heads, head_dim, dtype=dtype, scale=2.0)
    _run_and_check(backend, _positions(tokens), query, key, head_dim, cache, is_neox)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_strided_slices_of_fused_qkv(backend, dtype, is_neox):
    tokens, num_heads, num_kv_heads, head_dim, rotary_dim, pad = 9, 6, 2, 96, 48, 5
    q_cols, kv_cols = num_heads * head_dim, num_kv_heads * head_dim
    # [q | k | v | pad] per token: q and k are strided slices; v and pad must not change.
    qkv = torch.full((tokens, q_cols + 2 * kv_cols + pad), float("nan"), dtype=dtype, device=_device())
    qkv[:, : q_cols + 2 * kv_cols] = randn(tokens, q_cols + 2 * kv_cols, dtype=dtype)
    query, key = qkv[:, :q_cols], qkv[:, q_cols : q_cols + kv_cols]
    rest_before = _bits(qkv[:, q_cols + kv_cols :])
    _run_and_check(backend, _positions(tokens), query, key, head_dim, _cache(rotary_dim, torch.float32), is_neox)
    assert torch.equal(_bits(qkv[:, q_cols + kv_cols :]), rest_before), "v or padding columns were written"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
def test_key_none_and_int32_positions(backend, is_neox):
    tokens, head_dim = 13, 64
    query = randn(tokens, 4 * head_dim)
    _run_and_check(backend, _positions(tokens, torch.int32), query, None, head_dim, _cache(32, torch.float32), is_neox)


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_tokens_is_a_no_op(backend):
    query = randn(0, 2 * 64)
    with ops.use_backend(backend):
        rotary_embedding(_positions(0), query, None, 64, _cache(64, torch.float32))


@pytest.mark.parametrize("backend", ["reference", *[p for p in BACKENDS if p.values[0] == "cpu"]])
@pytest.mark.parametrize("bad", [-1, MAX_POSITION, MAX_POSITION + 100])
def test_positions_out_of_range_raise_before_writing(backend, bad):
    tokens, head_dim = 5, 64
    query, key = randn(tokens, 2 * head_dim), randn(tokens, head_dim)
    positions = _positions(tokens)
    positions[3] = bad
    q_before, k_before = query.clone(), key.clone()
    with ops.use_backend(backend), pytest.raises(ValueError, match="positions"):
        rotary_embedding(positions, query, key, head_dim, _cache(head_dim, torch.float32))
    assert torch.equal(query, q_before) and torch.equal(key, k_before)


def _valid_args():
    tokens, head_dim = 4, 64
    return dict(
        positions=_positions(tokens),
        query=randn(tokens, 4 * head_dim),
        key=randn(tokens, 2 * head_dim),
        head_dim=head_dim,
        cos_sin_cache=_cache(head_dim, torch.float32),
        is_neox=True,
    )


BAD_INPUTS = {
    "query_rank": (lambda a: a.update(query=a["query"].view(-1)), ValueError, "query"),
    "query_4d": (lambda a: a.update(query=a["query"].view(4, 2, 2, 64)), ValueError, "query"),
    "query_not_tensor": (lambda a: a.update(query=[1.0]), TypeError, "query"),
    "query_int": (lambda a: a.update(query=a["query"].int()), ValueError, "query"),
    "query_float64": (lambda a: a.update(query=a["query"].double()), ValueError, "query"),
    "query_heads_not_dividing": (lambda a: a.update(query=randn(4, 4 * 64 + 8)), ValueError, "query"),
    "key_heads_not_dividing": (lambda a: a.update(key=randn(4, 100)), ValueError, "key"),
    "query_last_dim_strided": (lambda a: a.update(query=randn(4, 4 * 64 * 2)[:, ::2]), ValueError, "query"),
    "query_heads_strided": (lambda a: a.update(query=randn(4, 4, 128)[:, :, :64]), ValueError, "query"),
    "query_head_dim_3d": (lambda a: a.update(query=randn(4, 2, 32)), ValueError, "query"),
    "key_dtype": (lambda a: a.update(key=a["key"].half()), ValueError, "key"),
    "key_tokens": (lambda a: a.update(key=randn(3, 2 * 64)), ValueError, "key"),
    "positions_tokens": (lambda a: a.update(positions=_positions(5)), ValueError, "query"),
    "positions_float": (lambda a: a.update(positions=a["positions"].float()), ValueError, "positions"),
    "positions_2d": (lambda a: a.update(positions=a["positions"].view(2, 2)), ValueError, "positions"),
    "cache_odd_rotary_dim": (lambda a: a.update(cos_sin_cache=torch.ones(16, 33)), ValueError, "rotary_dim"),
    "cache_rotary_dim_too_big": (lambda a: a.update(cos_sin_cache=_cache(128, torch.float32)), ValueError, "rotary_dim"),
    "cache_dtype": (lambda a: a.update(cos_sin_cache=_cache(64, torch.bfloat16)), ValueError, "cos_sin_cache"),
    "cache_rank": (lambda a: a.update(cos_sin_cache=_cache(64, torch.float32)[0]), ValueError, "cos_sin_cache"),
    "cache_not_contiguous": (lambda a: a.update(cos_sin_cache=_cache(128, torch.float32)[:, ::2]), ValueError, "cos_sin_cache"),
    "head_dim_zero": (lambda a: a.update(head_dim=0), ValueError, "head_dim"),
    "head_dim_float": (lambda a: a.update(head_dim=64.0), ValueError, "head_dim"),
    "is_neox_int": (lambda a: a.update(is_neox=1), TypeError, "is_neox"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_naming_the_argument(case):
    mutate, exc, name = BAD_INPUTS[case]
    args = _valid_args()
    mutate(args)
    with pytest.raises(exc, match=name):
        rotary_embedding(**args)


@pytest.mark.skipif(_device().type != "cpu", reason="the C++ CPU kernel's own checks")
@pytest.mark.parametrize(
    "case, message",
    [
        ("odd_rotary_dim", "rotary_dim"),
        ("key_dtype", "key"),
        ("overlapping_tokens", "query"),
        ("positions_tokens", "positions"),
        ("cache_dtype", "cos_sin_cache"),
    ],
)
def test_cpu_kernel_validates_its_own_arguments(case, message):
    """The kernel is also reachable without the Python wrapper: it must reject bad views, not crash."""
    from inference_pio import _native
    from inference_pio.ops._tensor import view

    pos, q, k, cache = _positions(4), randn(4, 2, 64), randn(4, 1, 64), _cache(64, torch.float32)
    if case == "odd_rotary_dim":
        cache = torch.ones(16, 63)
    elif case == "key_dtype":
        k = k.half()
    elif case == "overlapping_tokens":
        q = randn(256).as_strided((4, 2, 64), (1, 64, 1))
    elif case == "positions_tokens":
        pos = _positions(3)
    elif case == "cache_dtype":
        cache = cache.half()
    with pytest.raises(ValueError, match=message):
        _native.cpu_module().rotary_embedding(view(pos), view(q), view(k), view(cache), True)


@pytest.mark.parametrize("is_neox", [True, False], ids=["neox", "gptj"])
def test_reference_is_complex_multiplication(is_neox):
    """An independent statement of RoPE: each pair (a, b) is a + ib multiplied by e^(i angle)."""
    tokens, heads, head_dim, rotary_dim = 6, 3, 32, 24
    positions = _positions(tokens)
    cache = _cache(rotary_dim, torch.float32).double()
    x = randn(tokens, heads, head_dim).double()
    expected = x.clone()
    rot = expected[..., :rotary_dim]
    if is_neox:
        pairs = torch.stack((rot[..., : rotary_dim // 2], rot[..., rotary_dim // 2 :]), dim=-1)
    else:
        pairs = rot.unflatten(-1, (rotary_dim // 2, 2))
    cos, sin = cache[positions, : rotary_dim // 2], cache[positions, rotary_dim // 2 :]
    turned = torch.view_as_real(torch.view_as_complex(pairs.contiguous()) * torch.complex(cos, sin)[:, None, :])
    rot.copy_(torch.cat((turned[..., 0], turned[..., 1]), -1) if is_neox else turned.flatten(-2))
    rotary_embedding_reference(positions, x, None, head_dim, cache, is_neox)
    torch.testing.assert_close(x, expected, atol=1e-12, rtol=1e-12)


def test_custom_op_mutates_in_place():
    tokens, head_dim = 3, 64
    positions, cache = _positions(tokens), _cache(head_dim, torch.float32)
    query, key = randn(tokens, 2 * head_dim), randn(tokens, head_dim)
    q_ref, k_ref = query.double(), key.double()
    rotary_embedding_reference(positions, q_ref, k_ref, head_dim, cache.double(), True)
    torch.ops.inference_pio.rotary_embedding(positions, query, key, head_dim, cache, True)
    assert_close(query, q_ref, torch.float32)
    assert_close(key, k_ref, torch.float32)


def test_default_backend_is_cpu_on_cpu():
    if _device().type != "cpu":
        pytest.skip("CPU dispatch")
    from inference_pio.ops import _dispatch

    assert _dispatch.op("rotary_embedding").candidates(torch.device("cpu"))[0] == "cpu"
