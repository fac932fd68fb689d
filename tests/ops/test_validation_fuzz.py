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
