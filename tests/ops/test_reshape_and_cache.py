"""reshape_and_cache: every backend against the reference (an exact copy), bad input."""

import pytest
import torch

from inference_pio.ops import use_backend
from inference_pio.ops.kv_cache import reshape_and_cache, reshape_and_cache_reference
from .helpers import FLOAT_DTYPES, randn, runnable_backends, skip_if_interpreted_and_large
from .paged_cache import random_block_tables, slot_mapping

# (num_tokens, num_kv_heads, head_dim, block_size)
SHAPES = [(1, 8, 128, 16), (7, 2, 80, 32), (300, 8, 64, 16), (33, 1, 256, 16), (5, 3, 13, 1)]


def _write_case(num_tokens, heads, dim, block_size, dtype, slot_dtype, fused=False):
    """Tokens scattered over a few sequences' shuffled blocks; every third token from the second on is padding (-1)."""
    lens = [num_tokens, 5]
    tables, num_blocks = random_block_tables(lens, block_size)
    slots = slot_mapping(tables, [0] * num_tokens, range(num_tokens), block_size, dtype=slot_dtype)
    slots[1::3] = -1
    if fused:  # key and value sliced out of a fused qkv projection: a token stride > heads * dim
        qkv = randn(num_tokens, 3 * heads, dim, dtype=dtype)
        key, value = qkv[:, heads : 2 * heads], qkv[:, 2 * heads :]
    else:
        key, value = randn(num_tokens, heads, dim, dtype=dtype), randn(num_tokens, heads, dim, dtype=dtype)
    shape = (num_blocks, block_size, heads, dim)
    key_cache = torch.full(shape, float("nan"), dtype=dtype, device=key.device)
    value_cache = torch.full(shape, float("nan"), dtype=dtype, device=key.device)
    return key, value, key_cache, value_cache, slots


def _assert_same(actual, expected):
    torch.testing.assert_close(actual, expected, atol=0, rtol=0, equal_nan=True)


@pytest.mark.parametrize("backend", runnable_backends("reshape_and_cache"))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("slot_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(backend, dtype, slot_dtype, shape):
    skip_if_interpreted_and_large(backend, shape[0] * shape[1] * shape[2])
    key, value, key_cache, value_cache, slots = _write_case(*shape, dtype, slot_dtype, fused=shape[0] % 2 == 1)
    expected_k, expected_v = key_cache.clone(), value_cache.clone()
    reshape_and_cache_reference(key, value, expected_k, expected_v, slots)
    with use_backend(backend):
        assert reshape_and_cache(key, value, key_cache, value_cache, slots) is None
    _assert_same(key_cache, expected_k)
    _assert_same(value_cache, expected_v)
    # The rows really moved: a written slot holds its token's key.
    t = 0
    b, o = divmod(int(slots[t]), shape[3])
    _assert_same(key_cache[b, o], key[t])


def _args():
    key, value, key_cache, value_cache, slots = _write_case(6, 2, 16, 4, torch.float32, torch.int64)
    return dict(key=key, value=value, key_cache=key_cache, value_cache=value_cache, slot_mapping=slots)


def _set(args, name, fn):
    args[name] = fn(args[name])
    return args


BAD_INPUTS = {
    "key rank": (lambda a: _set(a, "key", lambda k: k[0]), "key"),
    "value shape": (lambda a: _set(a, "value", lambda v: v[:-1]), "value"),
    "cache dtype": (lambda a: _set(a, "key_cache", lambda c: c.half()), "key_cache"),
    "cache head_dim": (lambda a: _set(a, "value_cache", lambda c: c[..., :8].contiguous()), "value_cache"),
    "cache not contiguous": (lambda a: _set(a, "key_cache", lambda c: c.transpose(0, 1).contiguous().transpose(0, 1)), "key_cache"),
    "key heads strided": (lambda a: _set(a, "key", lambda k: torch.cat([k, k], -1)[..., :16]), "key"),
    "float slot_mapping": (lambda a: _set(a, "slot_mapping", lambda s: s.float()), "slot_mapping"),
    "slot_mapping length": (lambda a: _set(a, "slot_mapping", lambda s: s[:-1]), "slot_mapping"),
}


@pytest.mark.parametrize("backend", ["reference", *runnable_backends("reshape_and_cache")])
@pytest.mark.parametrize("bad", list(BAD_INPUTS))
def test_bad_input_raises(backend, bad):
    mutate, name = BAD_INPUTS[bad]
    with use_backend(backend), pytest.raises(ValueError, match=name):
        reshape_and_cache(**mutate(_args()))


@pytest.mark.parametrize("backend", ["reference", *runnable_backends("reshape_and_cache")])
def test_slot_out_of_range_writes_nothing(backend):
    if backend in ("triton", "cuda"):
        pytest.skip("GPU backends do not read slot_mapping values on the host (no device sync)")
    args = _args()
    slots = args["slot_mapping"].clone()
    slots[-1] = args["key_cache"].shape[0] * args["key_cache"].shape[1]  # one past the last slot
    args["slot_mapping"] = slots
    before_k, before_v = args["key_cache"].clone(), args["value_cache"].clone()
    with use_backend(backend), pytest.raises(ValueError, match="slot_mapping"):
        reshape_and_cache(**args)
    _assert_same(args["key_cache"], before_k)
    _assert_same(args["value_cache"], before_v)
