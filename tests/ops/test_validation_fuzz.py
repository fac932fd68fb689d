"""Property-based: random shapes and dtypes thrown at every op's validation either run or raise
ValueError/TypeError — never another exception, a crash or a hang."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference_pio import ops

DTYPES = st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int32, torch.int64])
SMALL = st.integers(min_value=0, max_value=9)


@st.composite
def tensors(draw, max_dims=4):
    shape = draw(st.lists(SMALL, min_size=0, max_size=max_dims))
    dtype = draw(DTYPES)
    t = torch.zeros(shape, dtype=dtype) if dtype in (torch.int32, torch.int64) else torch.randn(shape).to(dtype)
    if t.dim() >= 2 and draw(st.booleans()):
        t = t.transpose(0, -1)  # often non-contiguous
    return t


def _call(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except (ValueError, TypeError):
        pass


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(x=tensors(), w=tensors(max_dims=2), eps=st.sampled_from([1e-6, 0.0, -1.0]))
def test_rms_norm_validation(x, w, eps):
    _call(ops.rms_norm, x, w, eps)


@FUZZ
@given(x=tensors(), r=tensors(), w=tensors(max_dims=2))
def test_fused_add_rms_norm_validation(x, r, w):
    _call(ops.fused_add_rms_norm, x, r, w)


@pytest.mark.parametrize("dim", [0, 1])
def test_empty_rows_are_fine(dim):
    x = torch.randn(0, 8) if dim == 0 else torch.randn(3, 0)
    w = torch.ones(x.shape[-1])
    assert ops.rms_norm(x, w).shape == x.shape


INDEX_DTYPES = st.sampled_from([torch.int32, torch.int64, torch.float32])


@st.composite
def index_tensors(draw, max_len=6, low=-3, high=40):
    values = draw(st.lists(st.integers(min_value=low, max_value=high), min_size=0, max_size=max_len))
    return torch.tensor(values).to(draw(INDEX_DTYPES))


@FUZZ
@given(
    positions=index_tensors(),
    q=tensors(max_dims=3),
    k=st.one_of(st.none(), tensors(max_dims=3)),
    head_dim=st.sampled_from([0, 1, 2, 4, 8, 16, -4]),
    cache=tensors(max_dims=2),
    is_neox=st.booleans(),
)
def test_rotary_embedding_validation(positions, q, k, head_dim, cache, is_neox):
    _call(ops.rotary_embedding, positions, q, k, head_dim, cache, is_neox)


@FUZZ
@given(x=tensors(), approximate=st.sampled_from(["none", "tanh", "erf", ""]))
def test_activation_validation(x, approximate):
    _call(ops.silu_and_mul, x)
    _call(ops.gelu_and_mul, x, approximate)


@st.composite
def attention_case(draw):
    """A valid prefill problem with one property mutated: reaches the kernels' own checks too."""
    heads, kv_heads, head_dim = draw(st.sampled_from([(4, 2, 16), (2, 2, 32), (3, 1, 16), (4, 3, 16)]))
    lens_q = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3))
    extra = draw(st.lists(st.integers(0, 3), min_size=len(lens_q), max_size=len(lens_q)))
    lens_k = [a + b for a, b in zip(lens_q, extra)]
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
    q = torch.randn(sum(lens_q), heads, head_dim).to(dtype)
    k = torch.randn(sum(lens_k), kv_heads, head_dim).to(dtype)
    v = torch.randn(sum(lens_k), kv_heads, head_dim).to(dtype)
    cu_q = torch.tensor([0] + list(torch.tensor(lens_q).cumsum(0).tolist()), dtype=torch.int32)
    cu_k = torch.tensor([0] + list(torch.tensor(lens_k).cumsum(0).tolist()), dtype=torch.int32)
    mutation = draw(st.sampled_from(["none", "cu_q_dtype", "cu_k_order", "v_dtype", "q_rank", "k_heads", "window", "scale", "swap"]))
    kwargs = {}
    if mutation == "cu_q_dtype":
        cu_q = cu_q.long()
    elif mutation == "cu_k_order":
        cu_k = cu_k.flip(0)
    elif mutation == "v_dtype":
        v = v.double()
    elif mutation == "q_rank":
        q = q.flatten(1)
    elif mutation == "k_heads":
        k = torch.randn(k.shape[0], kv_heads + 1, head_dim).to(dtype)
    elif mutation == "window":
        kwargs["sliding_window"] = draw(st.integers(-2, 3))
    elif mutation == "scale":
        kwargs["scale"] = draw(st.sampled_from([0.0, -1.0, float("nan")]))
    elif mutation == "swap":
        cu_q, cu_k = cu_k, cu_q
    return (q, k, v, cu_q, cu_k), kwargs


@FUZZ
@given(case=attention_case(), causal=st.booleans())
def test_prefill_attention_validation(case, causal):
    args, kwargs = case
    _call(ops.prefill_attention, *args, causal=causal, **kwargs)


@st.composite
def paged_case(draw):
    """A valid decode problem over a paged cache with one property mutated."""
    heads, kv_heads, head_dim = draw(st.sampled_from([(4, 2, 16), (2, 2, 32), (4, 1, 16)]))
    num_blocks, block_size, batch = 6, 4, draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16]))
    kc = torch.randn(num_blocks, block_size, kv_heads, head_dim).to(dtype)
    vc = torch.randn_like(kc)
    q = torch.randn(batch, heads, head_dim).to(dtype)
    tables = torch.randint(0, num_blocks, (batch, 3), dtype=torch.int32)
    lens = torch.randint(1, 3 * block_size + 1, (batch,), dtype=torch.int32)
    mutation = draw(
        st.sampled_from(["none", "block_oob", "block_neg", "len_zero", "len_long", "tables_i64", "cache_dtype", "cache_strided", "q_heads"])
    )
    if mutation == "block_oob":
        tables[0, 0] = num_blocks
    elif mutation == "block_neg":
        tables[-1, 0] = -1
    elif mutation == "len_zero":
        lens[0] = 0
    elif mutation == "len_long":
        lens[0] = 3 * block_size + 1
    elif mutation == "tables_i64":
        tables = tables.long()
    elif mutation == "cache_dtype":
        vc = vc.double()
    elif mutation == "cache_strided":
        kc = kc.transpose(1, 2).contiguous().transpose(1, 2)
    elif mutation == "q_heads":
        q = torch.randn(batch, heads + 1, head_dim).to(dtype)
    return q, kc, vc, tables, lens


@FUZZ
@given(case=paged_case(), window=st.sampled_from([None, 1, 5, 0, -3]))
def test_paged_decode_attention_validation(case, window):
    _call(ops.paged_decode_attention, *case, sliding_window=window)


@FUZZ
@given(case=paged_case(), slots=index_tensors(max_len=3, low=-2, high=30))
def test_reshape_and_cache_validation(case, slots):
    q, kc, vc, _, _ = case
    n = slots.shape[0]
    key = torch.randn(n, kc.shape[2], kc.shape[3]).to(kc.dtype)
    _call(ops.reshape_and_cache, key, key.clone(), kc, vc, slots)
