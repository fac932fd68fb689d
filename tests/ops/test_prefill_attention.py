"""prefill_attention: every backend against the float64 reference (varlen, GQA, windows, paged)."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from inference_pio import _native, ops
from inference_pio.ops._tensor import optional_view, view
from inference_pio.ops.prefill_attention import prefill_attention, prefill_attention_reference
from .helpers import (
    FLOAT_DTYPES,
    assert_close,
    poisoned_like,
    randn,
    runnable_backends,
    skip_if_interpreted_and_large,
    skip_if_interpreted_bf16_dot,
)
from .helpers import device_under_test as device
from .tolerances import ATTENTION_TOLERANCES

BACKENDS = runnable_backends("prefill_attention")

# (heads, kv_heads, head_dim, lens_q, lens_k (None: = lens_q), causal, sliding_window)
CASES = [
    (32, 32, 64, [1], None, True, None),
    (32, 8, 128, [7, 17, 128], None, True, None),
    (8, 1, 64, [1000], None, True, None),
    (8, 1, 96, [17, 1, 7], [40, 1, 30], True, None),  # chunked prefill: earlier keys cached
    (14, 2, 256, [33, 5], None, False, None),
    (8, 2, 80, [128, 7], [200, 7], True, 32),
    (32, 8, 96, [100], None, True, 1),
    (4, 4, 80, [5, 0, 9, 3], [5, 0, 20, 0], False, None),  # an empty sequence; keys-less queries -> zeros
    (32, 32, 128, [129, 63], None, True, None),
]


def cu_seqlens(lengths, on=None) -> torch.Tensor:
    return torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device=on or device())


def make_inputs(heads, kv_heads, head_dim, lens_q, lens_k, dtype):
    lens_k = lens_q if lens_k is None else lens_k
    q = randn(sum(lens_q), heads, head_dim, dtype=dtype, scale=2.0)  # peaky softmax rows
    k = randn(sum(lens_k), kv_heads, head_dim, dtype=dtype)
    v = randn(sum(lens_k), kv_heads, head_dim, dtype=dtype)
    return q, k, v, cu_seqlens(lens_q), cu_seqlens(lens_k)


def to_paged(key, value, lens_k, block_size, seed=0):
    """Scatters each sequence's keys into shuffled physical blocks of NaN-filled caches (a kernel reading
    past a sequence's keys poisons its output). Unused block-table entries are -1."""
    used = [-(-n // block_size) for n in lens_k]
    num_blocks = sum(used) + 3
    perm = torch.randperm(num_blocks, generator=torch.Generator().manual_seed(seed)).tolist()
    shape = (num_blocks, block_size) + tuple(key.shape[1:])
    k_cache = torch.full(shape, float("nan"), dtype=key.dtype, device=key.device)
    v_cache = torch.full_like(k_cache, float("nan"))
    table = torch.full((len(lens_k), max(used, default=0) + 1), -1, dtype=torch.int32)
    start = 0
    for b, n in enumerate(lens_k):
        for i in range(used[b]):
            blk = perm.pop()
            table[b, i] = blk
            rows = slice(start + i * block_size, start + min(n, (i + 1) * block_size))
            count = rows.stop - rows.start
            k_cache[blk, :count] = key[rows]
            v_cache[blk, :count] = value[rows]
        start += n
    return k_cache, v_cache, table.to(key.device)


def reference64(q, k, v, cu_q, cu_k, causal, window, **kw):
    return prefill_attention_reference(q.double(), k.double(), v.double(), cu_q, cu_k, causal, None, window, **kw)


def skip_unsupported(backend, dtype, work):
    skip_if_interpreted_and_large(backend, work)
    skip_if_interpreted_bf16_dot(backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"h{c[0]}kv{c[1]}d{c[2]}q{c[3]}k{c[4]}{'c' if c[5] else 'n'}w{c[6]}")
def test_matches_reference(backend, dtype, case):
    heads, kv_heads, head_dim, lens_q, lens_k, causal, window = case
    skip_unsupported(backend, dtype, sum(lens_q) * heads * head_dim)
    q, k, v, cu_q, cu_k = make_inputs(heads, kv_heads, head_dim, lens_q, lens_k, dtype)
    out = poisoned_like(q)
    with ops.use_backend(backend):
        result = prefill_attention(q, k, v, cu_q, cu_k, causal, None, window, out=out)
    assert result is out
    assert_close(out, reference64(q, k, v, cu_q, cu_k, causal, window), dtype, ATTENTION_TOLERANCES)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("block_size, window", [(16, None), (32, 48)])
def test_paged_matches_reference(backend, dtype, block_size, window):
    heads, kv_heads, head_dim, lens_q, lens_k = 14, 2, 64, [17, 1, 64], [50, 33, 100]
    skip_unsupported(backend, dtype, sum(lens_q) * heads * head_dim)
    q, k, v, cu_q, cu_k = make_inputs(heads, kv_heads, head_dim, lens_q, lens_k, dtype)
    k_cache, v_cache, table = to_paged(k, v, lens_k, block_size, seed=block_size)
    out = poisoned_like(q)
    with ops.use_backend(backend):
        prefill_attention(q, k_cache, v_cache, cu_q, cu_k, True, None, window, block_tables=table, out=out)
    expected = reference64(q, k, v, cu_q, cu_k, True, window)
    if dtype == torch.float32:  # the reference itself gathers blocks right
        paged_ref = reference64(q, k_cache, v_cache, cu_q, cu_k, True, window, block_tables=table)
        torch.testing.assert_close(paged_ref, expected, rtol=1e-12, atol=1e-12)
    assert_close(out, expected, dtype, ATTENTION_TOLERANCES)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_tokens(backend):
    """q/k/v as views into one fused qkv projection: token stride != heads * head_dim."""
    heads, kv_heads, d, lens = 8, 2, 64, [9, 23]
    qkv = randn(sum(lens), (heads + 2 * kv_heads) * d)
    q = qkv[:, : heads * d].view(-1, heads, d)
    k = qkv[:, heads * d : (heads + kv_heads) * d].view(-1, kv_heads, d)
    v = qkv[:, (heads + kv_heads) * d :].view(-1, kv_heads, d)
    cu = cu_seqlens(lens)
    with ops.use_backend(backend):
        out = prefill_attention(q, k, v, cu, cu)
    assert_close(out, reference64(q, k, v, cu, cu, True, None), torch.float32, ATTENTION_TOLERANCES)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("causal", [True, False])
def test_matches_torch_sdpa(backend, causal):
    heads, kv_heads, d, n = 8, 2, 64, 77
    q, k, v, cu, _ = make_inputs(heads, kv_heads, d, [n], None, torch.float32)
    with ops.use_backend(backend):
        out = prefill_attention(q, k, v, cu, cu, causal)
    expected = F.scaled_dot_product_attention(
        q.transpose(0, 1).double(), k.transpose(0, 1).double(), v.transpose(0, 1).double(), is_causal=causal, enable_gqa=True
    ).transpose(0, 1)
    assert_close(out, expected, torch.float32, ATTENTION_TOLERANCES)


@pytest.mark.skipif(not _native.cpu_available(), reason="the C++ CPU extension is not available")
@pytest.mark.parametrize("isa", _native.supported_cpu_isas())
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("paged", [False, True])
def test_every_cpu_isa(isa, dtype, paged):
    """Each ISA build of the kernel (AVX2's 8-lane path included), called directly."""
    heads, kv_heads, d, lens_q, lens_k, window = 14, 2, 80, [33, 70], [40, 70], 20
    q, k, v, cu_q, cu_k = make_inputs(heads, kv_heads, d, lens_q, lens_k, dtype)
    q, k, v, cu_q, cu_k = (t.cpu() for t in (q, k, v, cu_q, cu_k))
    table = None
    if paged:
        k, v, table = to_paged(k, v, lens_k, 16)
    out = poisoned_like(q)
    _native.cpu_module(isa).prefill_attention(
        view(out), view(q), view(k), view(v), view(cu_q), view(cu_k), True, d**-0.5, window, optional_view(table)
    )
    assert_close(out, reference64(q, k, v, cu_q, cu_k, True, window, block_tables=table), dtype, ATTENTION_TOLERANCES)


def _valid_args():
    q, k, v, cu_q, cu_k = make_inputs(4, 2, 64, [3, 5], [4, 5], torch.float32)
    return dict(query=q, key=k, value=v, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)


def _paged_args():
    args = _valid_args()
    args["key"], args["value"], args["block_tables"] = to_paged(args["key"], args["value"], [4, 5], 4)
    return args


# (what to change, which argument the message must name)
BAD_INPUTS = [
    (lambda a: a.update(cu_seqlens_q=a["cu_seqlens_q"].long()), "cu_seqlens_q must have dtype int32"),
    (lambda a: a.update(cu_seqlens_q=a["cu_seqlens_q"] + 1), r"cu_seqlens_q\[0\] must be 0"),
    (lambda a: a.update(cu_seqlens_q=cu_seqlens([3, 4])), r"cu_seqlens_q\[-1\] must equal the number of tokens \(8\)"),
    (lambda a: a.update(cu_seqlens_k=torch.tensor([0, 6, 5], dtype=torch.int32, device=device())), "cu_seqlens_k must be non-decreasing"),
    (lambda a: a.update(cu_seqlens_k=cu_seqlens([4, 5, 0])), "cu_seqlens_k must have as many entries"),
    (lambda a: a.update(cu_seqlens_k=cu_seqlens([2, 7])), "len_k >= len_q, sequence 0"),
    (lambda a: a.update(causal=False, sliding_window=4), "sliding_window requires causal"),
    (lambda a: a.update(sliding_window=0), "sliding_window must be a positive int"),
    (lambda a: a.update(key=a["key"].half()), "key must have dtype float32"),
    (lambda a: a.update(key=a["key"][:, :1], value=a["value"][:, :1].repeat(1, 3, 1)), "value must have shape"),
    (lambda a: a.update(query=a["query"][:, :3]), "num_heads \\(3\\) must be a multiple of num_kv_heads \\(2\\)"),
    (lambda a: a.update(query=a["query"][:, :, ::2]), "query must have a contiguous last dimension"),
    (lambda a: a.update(query=a["query"].flatten(1)), "query must have 3 dimensions"),
    (lambda a: a.update(out=torch.empty(8, 4, 32, device=device())), "out must have shape"),
    (lambda a: a.update(scale=-1.0), "scale must be a positive float"),
    (lambda a: a.update(max_seqlen_q=4), r"max_seqlen_q \(4\) is smaller than the longest sequence \(5\)"),
    (lambda a: a.update(max_seqlen_k=-1), "max_seqlen_k must be a non-negative int"),
]

BAD_PAGED_INPUTS = [
    (lambda a: a["block_tables"].__setitem__((1, 1), 99), r"block_tables\[1\]\[1\] = 99 is not a block id"),
    (lambda a: a["block_tables"].__setitem__((0, 0), -1), r"block_tables\[0\]\[0\] = -1"),
    (lambda a: a.update(block_tables=a["block_tables"][:, :1].contiguous()), "sequence 1 has 5 keys but block_tables has room for 1"),
    (lambda a: a.update(block_tables=a["block_tables"].long()), "block_tables must have dtype int32"),
    (lambda a: a.update(block_tables=a["block_tables"][:1]), "block_tables must have shape"),
    (lambda a: a.update(key=a["key"].flatten(0, 1)), "key must have 4 dimensions"),
]


@pytest.mark.parametrize("backend", ["reference", *BACKENDS])
@pytest.mark.parametrize("paged", [False, True])
def test_rejects_bad_input(backend, paged):
    for change, message in BAD_PAGED_INPUTS if paged else BAD_INPUTS:
        args = _paged_args() if paged else _valid_args()
        change(args)
        with ops.use_backend(backend), pytest.raises(ValueError, match=message):
            prefill_attention(**args)


@pytest.mark.skipif(not _native.cpu_available(), reason="the C++ CPU extension is not available")
def test_native_kernel_validates_on_its_own():
    """The C++ entry point re-checks what Python checked: a caller bypassing Python gets ValueError, not a crash."""
    q, k, v, cu_q, cu_k = (t.cpu() for t in _valid_args().values())
    kernel = _native.cpu_module().prefill_attention

    def call(q=q, k=k, v=v, cu_q=cu_q, cu_k=cu_k, causal=True, window=None, table=None, out=None):
        out = torch.empty_like(q) if out is None else out
        kernel(view(out), view(q), view(k), view(v), view(cu_q), view(cu_k), causal, 0.125, window, optional_view(table))

    bad_cu = torch.tensor([0, 6, 5], dtype=torch.int32)
    cases = [
        (dict(cu_k=bad_cu), "cu_seqlens_k must be non-decreasing"),
        (dict(cu_q=cu_seqlens([3, 4], "cpu")), r"cu_seqlens_q\[-1\] must equal total_q"),
        (dict(cu_k=torch.tensor([0, 2, 9], dtype=torch.int32)), "len_k >= len_q"),
        (dict(causal=False, window=3), "sliding_window requires causal"),
        (dict(q=q[..., :48].contiguous()), "key must have head_dim 48"),
        (dict(q=torch.zeros(8, 4, 72), k=torch.zeros(9, 2, 72), v=torch.zeros(9, 2, 72)), "head_dim a multiple of 16"),
        (dict(out=torch.empty(8, 4, 64, dtype=torch.float16)), "out and query must have the same dtype"),
        (dict(k=k.double(), v=v.double()), "key and query must have the same dtype"),
    ]
    k_cache, v_cache, table = to_paged(k, v, [4, 5], 4)
    bad_table = table.clone()
    bad_table[1, 0] = 1000
    cases += [
        (dict(k=k_cache, v=v_cache, table=bad_table), r"block_tables\[1\]\[0\] = 1000"),
        (dict(k=k_cache, v=v_cache, table=table[:, :1].contiguous()), "block_tables has room for 1"),
        (dict(k=k_cache, v=v_cache, table=table.long()), "block_tables must be int32"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            call(**kwargs)


def test_unsupported_head_dim_falls_back_or_raises():
    q, k, v, cu_q, cu_k = make_inputs(4, 2, 72, [5], None, torch.float32)
    if _native.cpu_available() and q.device.type == "cpu":
        with ops.use_backend("cpu"), pytest.raises(ops.BackendUnsupported, match="head_dim a multiple of 16"):
            prefill_attention(q, k, v, cu_q, cu_k)
        with pytest.warns(UserWarning, match="falling back"):
            out = prefill_attention(q, k, v, cu_q, cu_k)
    else:
        out = prefill_attention(q, k, v, cu_q, cu_k)
    assert_close(out, reference64(q, k, v, cu_q, cu_k, True, None), torch.float32, ATTENTION_TOLERANCES)


def test_custom_op_registration():
    q, k, v, cu_q, cu_k = make_inputs(4, 2, 64, [3, 5], [4, 5], torch.float32)
    torch.library.opcheck(
        torch.ops.inference_pio.prefill_attention.default,
        (q, k, v, cu_q, cu_k, True, None, None, None, None, None),
        test_utils=("test_schema", "test_faketensor"),
    )


def test_default_backend_is_cpu_on_cpu():
    if device().type != "cpu":
        pytest.skip("CPU dispatch")
    from inference_pio.ops import _dispatch

    assert _dispatch.op("prefill_attention").candidates(torch.device("cpu"))[0] == "cpu"
