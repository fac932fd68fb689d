"""rms_norm and fused_add_rms_norm: every backend against the float64 reference."""

import pytest
import torch

from inference_pio import ops
from .helpers import (
    FLOAT_DTYPES,
    assert_close,
    poisoned_like,
    randn,
    runnable_backends,
    skip_if_interpreted_and_large,
    device_under_test,
)

SHAPES = [(1, 64), (7, 80), (17, 96), (3, 5, 128), (128, 2048), (2, 4096), (1, 1), (5, 33), (1000, 13)]


@pytest.mark.parametrize("backend", runnable_backends("rms_norm"))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("weight_fp32", [False, True])
def test_rms_norm_matches_reference(backend, dtype, shape, weight_fp32):
    skip_if_interpreted_and_large(backend, torch.Size(shape).numel(), limit=8192)
    x = randn(*shape, dtype=dtype, scale=3.0)
    w = randn(shape[-1], dtype=torch.float32 if weight_fp32 else dtype)
    out = poisoned_like(x)
    with ops.use_backend(backend):
        result = ops.rms_norm(x, w, 1e-5, out=out)
    assert result is out
    expected = ops.rms_norm_reference(x.double(), w.double(), 1e-5)
    assert_close(out, expected, dtype)


@pytest.mark.parametrize("backend", runnable_backends("rms_norm"))
def test_rms_norm_strided_rows(backend):
    base = randn(9, 256)
    x = base[:, :128]  # row stride 256, last dim contiguous: a slice of a fused projection
    with ops.use_backend(backend):
        out = ops.rms_norm(x, torch.ones(128, device=x.device))
    assert_close(out, ops.rms_norm_reference(x.double(), torch.ones(128, dtype=torch.float64, device=x.device), 1e-6), torch.float32)


@pytest.mark.parametrize("backend", runnable_backends("fused_add_rms_norm"))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_fused_add_rms_norm_matches_reference(backend, dtype, shape):
    skip_if_interpreted_and_large(backend, torch.Size(shape).numel(), limit=8192)
    x = randn(*shape, dtype=dtype, scale=2.0)
    residual = randn(*shape, dtype=dtype)
    w = randn(shape[-1], dtype=dtype)
    x_ref, res_ref = x.double(), residual.double()
    # The reference rounds the residual to the input dtype before normalizing, like the kernels.
    res_ref = (res_ref + x_ref).to(dtype).double()
    expected = ops.rms_norm_reference(res_ref, w.double(), 1e-6)
    with ops.use_backend(backend):
        ops.fused_add_rms_norm(x, residual, w, 1e-6)
    assert_close(residual, res_ref, dtype)
    assert_close(x, expected, dtype)


def test_rms_norm_default_backend_is_cpu_on_cpu():
    if device_under_test().type != "cpu":
        pytest.skip("CPU dispatch")
    from inference_pio.ops import _dispatch

    assert _dispatch.op("rms_norm").candidates(torch.device("cpu"))[0] == "cpu"


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: (torch.randn(4, 8), torch.ones(7)), "weight must have shape"),
        (lambda: (torch.randn(4, 8), torch.ones(1, 8)), "weight must have 1 dimensions"),
        (lambda: (torch.randn(4, 8), torch.ones(8, dtype=torch.float16)), "weight must have dtype"),
        (lambda: (torch.randn(4, 8, dtype=torch.float16), torch.ones(8, dtype=torch.bfloat16)), "weight must have dtype"),
        (lambda: (torch.randn(8, 4).t(), torch.ones(8)), "x must have a contiguous last dimension"),
        (lambda: (torch.randn(4, 8).to(torch.int32), torch.ones(8)), "x must have dtype"),
        (lambda: (torch.randn(4, 8, dtype=torch.float64), torch.ones(8)), "x must have dtype"),
        (lambda: ([[1.0]], torch.ones(1)), "x must be a torch.Tensor"),
    ],
)
def test_rms_norm_bad_input_names_the_argument(make, match):
    x, w = make()
    with pytest.raises((ValueError, TypeError), match=match):
        ops.rms_norm(x, w)


def test_rms_norm_bad_out_and_eps():
    x, w = torch.randn(4, 8), torch.ones(8)
    with pytest.raises(ValueError, match="out must have shape"):
        ops.rms_norm(x, w, out=torch.empty(4, 9))
    with pytest.raises(ValueError, match="out must have dtype"):
        ops.rms_norm(x, w, out=torch.empty(4, 8, dtype=torch.float16))
    with pytest.raises(ValueError, match="eps must be"):
        ops.rms_norm(x, w, -1.0)


def test_rms_norm_unmergeable_rows_are_rejected():
    x = torch.randn(4, 6, 8).transpose(0, 1)  # last dim contiguous, leading dims not mergeable
    with pytest.raises(ValueError, match="cannot be merged into rows"):
        ops.rms_norm(x, torch.ones(8))


def test_fused_add_rms_norm_bad_input():
    x = torch.randn(4, 8)
    with pytest.raises(ValueError, match="residual must have shape"):
        ops.fused_add_rms_norm(x, torch.randn(4, 7), torch.ones(8))
    with pytest.raises(ValueError, match="residual must have dtype"):
        ops.fused_add_rms_norm(x, torch.randn(4, 8, dtype=torch.bfloat16), torch.ones(8))
