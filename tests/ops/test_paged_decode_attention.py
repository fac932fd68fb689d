"""paged_decode_attention: every backend against the float64 reference; the reference against a
dense computation; split-K and the AVX2 build of the cpu kernel; bad input."""

import warnings

import pytest
import torch

from inference_pio import _native
from inference_pio.ops import BackendUnsupported, use_backend
from inference_pio.ops._tensor import view
from inference_pio.ops.paged_decode_attention import paged_decode_attention, paged_decode_attention_reference
from .helpers import (
    FLOAT_DTYPES,
    assert_close,
    poisoned_like,
    randn,
    runnable_backends,
    skip_if_interpreted_and_large,
    skip_if_interpreted_bf16_dot,
)
from .paged_cache import make_paged_kv
from .tolerances import ATTENTION_TOLERANCES

# (num_heads, num_kv_heads, head_dim, block_size, context_lens, sliding_window): a sample of the
# grid (every head dim, GQA ratio, block size, and mixed context lengths appear at least once).
CASES = [
    (32, 8, 128, 16, [1, 7, 17, 128, 1000], None),
    (32, 32, 64, 16, [17, 1, 128], None),
    (14, 2, 80, 32, [1000, 7], None),
    (8, 1, 96, 16, [128, 17, 1], 100),  # window shorter than some contexts
    (8, 1, 256, 32, [7, 1000], 5000),  # window longer than every context
    (32, 8, 256, 16, [17, 33], 16),
    (14, 2, 64, 32, [1, 1, 1], None),
    (32, 8, 96, 16, [1000], 1),
]


def case_id(case):
    h, kv, d, bs, lens, win = case
    return f"h{h}kv{kv}-d{d}-bs{bs}-ctx{'_'.join(map(str, lens))}" + (f"-win{win}" if win else "")


def run_case(backend, dtype, case, **kwargs):
    num_heads, num_kv_heads, head_dim, block_size, lens, window = case
    skip_if_interpreted_and_large(backend, sum(lens) * num_heads * head_dim, limit=1 << 18)
    skip_if_interpreted_bf16_dot(backend, dtype)
    kv = make_paged_kv(lens, num_kv_heads, head_dim, block_size, dtype)
    query = randn(len(lens), num_heads, head_dim, dtype=dtype)
    out = poisoned_like(query)
    with use_backend(backend):
        result = paged_decode_attention(
            query, kv.key_cache, kv.value_cache, kv.block_tables, kv.context_lens, None, window, out=out, **kwargs
        )
    assert result is out
    expected = paged_decode_attention_reference(query.double(), *kv.caches64(), kv.block_tables, kv.context_lens, None, window)
    assert_close(out, expected, dtype, ATTENTION_TOLERANCES)


@pytest.mark.parametrize("backend", runnable_backends("paged_decode_attention"))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_reference(backend, dtype, case):
    run_case(backend, dtype, case)


@pytest.mark.parametrize("backend", runnable_backends("paged_decode_attention"))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_long_context_batch_one(backend, dtype):
    """Batch 1, two kv heads, 4000 keys: the cpu kernel splits the context over its threads."""
    run_case(backend, dtype, (16, 2, 128, 16, [4000], None), max_context_len=4000)


@pytest.mark.parametrize("backend", runnable_backends("paged_decode_attention"))
def test_strided_query_and_scale(backend):
    """A query sliced out of a fused qkv projection, an explicit scale."""
    kv = make_paged_kv([50, 3], 2, 64, 16, torch.float32)
    qkv = randn(2, 8 + 2 * 2, 64)
    query = qkv[:, :8]
    with use_backend(backend):
        out = paged_decode_attention(query, kv.key_cache, kv.value_cache, kv.block_tables, kv.context_lens, scale=0.3)
    expected = paged_decode_attention_reference(query.double(), *kv.caches64(), kv.block_tables, kv.context_lens, 0.3)
    assert_close(out, expected, torch.float32, ATTENTION_TOLERANCES)


@pytest.mark.parametrize("window", [None, 5])
def test_reference_matches_dense_attention(window):
    """The reference (paged gather) against plain attention over each sequence's dense keys."""
    kv = make_paged_kv([9, 40], 2, 16, 8, torch.float64)
    query = randn(2, 4, 16, dtype=torch.float64)
    got = paged_decode_attention_reference(query, kv.key_cache, kv.value_cache, kv.block_tables, kv.context_lens, 0.5, window)
    for s, (k, v) in enumerate(zip(kv.keys, kv.values)):
        if window is not None:
            k, v = k[-window:], v[-window:]
        k, v = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)  # [n, heads, dim]
        p = torch.softmax(torch.einsum("hd,nhd->hn", query[s], k) * 0.5, dim=-1)
        torch.testing.assert_close(got[s], torch.einsum("hn,nhd->hd", p, v))


# The cpu kernel called directly: every ISA build this CPU runs, with split-K forced into
# small (and odd) partitions so the merge of partial results is compared too.
@pytest.mark.skipif(not _native.cpu_available(), reason="the C++ extension is not available")
@pytest.mark.parametrize("isa", _native.supported_cpu_isas())
@pytest.mark.parametrize("partition", [0, 37, 256])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_cpu_isas_and_split_k(isa, partition, dtype):
    module = _native.cpu_module(isa)
    kv = make_paged_kv([1, 300, 1000], 2, 80, 16, dtype)
    query = randn(3, 14, 80, dtype=dtype)
    out = poisoned_like(query)
    module.paged_decode_attention(
        view(out), view(query), view(kv.key_cache), view(kv.value_cache), view(kv.block_tables), view(kv.context_lens),
        80**-0.5, 700, None, partition,
    )
    expected = paged_decode_attention_reference(query.double(), *kv.caches64(), kv.block_tables, kv.context_lens, None, 700)
    assert_close(out, expected, dtype, ATTENTION_TOLERANCES)


def _args(num_heads=8, num_kv_heads=2, head_dim=64, dtype=torch.float32):
    kv = make_paged_kv([20, 5], num_kv_heads, head_dim, 16, dtype)
    query = randn(2, num_heads, head_dim, dtype=dtype)
    return dict(query=query, key_cache=kv.key_cache, value_cache=kv.value_cache, block_tables=kv.block_tables,
                context_lens=kv.context_lens)


def _set(args, name, fn):
    args[name] = fn(args[name])
    return args


def _bad_block(t):
    t = t.clone()
    t[0, 1] = 10_000
    return t


def _negative_block(t):
    t = t.clone()
    t[1, 0] = -1
    return t


BAD_INPUTS = {
    "query rank": (lambda a: _set(a, "query", lambda q: q[0]), "query"),
    "query/cache dtype": (lambda a: _set(a, "key_cache", lambda c: c.half()), "key_cache"),
    "value_cache shape": (lambda a: _set(a, "value_cache", lambda c: c[:-1]), "value_cache"),
    "cache not contiguous": (lambda a: _set(a, "key_cache", lambda c: c.transpose(0, 1).contiguous().transpose(0, 1)), "key_cache"),
    "int64 block_tables": (lambda a: _set(a, "block_tables", lambda t: t.long()), "block_tables"),
    "block id too large": (lambda a: _set(a, "block_tables", _bad_block), "block_tables"),
    "negative block id": (lambda a: _set(a, "block_tables", _negative_block), "block_tables"),
    "context_lens 0": (lambda a: _set(a, "context_lens", lambda c: torch.zeros_like(c)), "context_lens"),
    "context_lens too long": (lambda a: _set(a, "context_lens", lambda c: c * 100), "context_lens"),
    "context_lens int64": (lambda a: _set(a, "context_lens", lambda c: c.long()), "context_lens"),
    "heads not divisible": (lambda a: _set(a, "query", lambda q: q[:, :7]), "num_heads"),
    "max_context_len below a context": (lambda a: dict(a, max_context_len=10), "context_lens"),
    "sliding_window 0": (lambda a: dict(a, sliding_window=0), "sliding_window"),
    "negative scale": (lambda a: dict(a, scale=-1.0), "scale"),
}
# Caught by reading the metadata's values: the reference and the cpu kernel do.
VALUE_CHECKS = {"block id too large", "negative block id", "context_lens 0", "context_lens too long",
                "max_context_len below a context"}


@pytest.mark.parametrize("backend", ["reference", *runnable_backends("paged_decode_attention")])
@pytest.mark.parametrize("bad", list(BAD_INPUTS))
def test_bad_input_raises(backend, bad):
    if bad in VALUE_CHECKS and backend in ("triton", "cuda"):
        pytest.skip("GPU backends do not read block_tables/context_lens values on the host (no device sync)")
    mutate, name = BAD_INPUTS[bad]
    args = mutate(_args())
    with use_backend(backend), pytest.raises(ValueError, match=name):
        paged_decode_attention(**args)


@pytest.mark.skipif(not _native.cpu_available(), reason="the C++ extension is not available")
def test_cpu_kernel_checks_its_arguments():
    """The C++ entry point validates what the Python wrapper would (it must never crash)."""
    a = _args()
    out = torch.empty_like(a["query"])
    views = [view(a[k]) for k in ("query", "key_cache", "value_cache", "block_tables", "context_lens")]
    kernel = _native.cpu_module().paged_decode_attention
    with pytest.raises(ValueError, match="block_tables"):
        kernel(view(out), *views[:3], view(a["block_tables"].long()), views[4], 0.1)
    b = _args(head_dim=72)
    with pytest.raises(ValueError, match="head_dim"):
        kernel(*(view(b[k]) for k in ("query", "query", "key_cache", "value_cache", "block_tables", "context_lens")), 0.1)
    with pytest.raises(ValueError, match="out"):
        kernel(view(out.half()), *views, 0.1)


@pytest.mark.skipif(not _native.cpu_available(), reason="the C++ extension is not available")
def test_unsupported_head_dim_on_cpu():
    args = _args(head_dim=72)
    with use_backend("cpu"), pytest.raises(BackendUnsupported, match="head_dim"):
        paged_decode_attention(**args)
    # Automatic dispatch falls back to the reference instead of failing (it warns once per process).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = paged_decode_attention(**args)
    expected = paged_decode_attention_reference(
        args["query"].double(), args["key_cache"].double(), args["value_cache"].double(), args["block_tables"], args["context_lens"]
    )
    assert_close(got, expected, torch.float32, ATTENTION_TOLERANCES)
