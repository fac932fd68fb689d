"""Routing is decided in one place (ops/_dispatch.py): backend by device, torch's matmul above the
dispatcher's row thresholds, forced backends, the custom op under torch.compile; and the handles the
layers fetch once give exactly the ops' results while following those decisions."""

import importlib
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from inference_pio import _native, ops
from inference_pio.layers import Linear, QuantizedEmbedding, QuantizedLinear
from inference_pio.ops import _dispatch
from .helpers import poisoned_like, randn
from .quantized_weights import QTYPES, random_qweight

lin = importlib.import_module("inference_pio.ops.linear")
ql = importlib.import_module("inference_pio.ops.quantized_linear")

cpu_only = pytest.mark.skipif(not _native.cpu_available(), reason="the C++ CPU extension is not available")
CPU, CUDA = torch.device("cpu"), torch.device("cuda")
DENSE_MAX, QUANTIZED_MAX = _dispatch.LINEAR_KERNEL_MAX_ROWS, _dispatch.QUANTIZED_LINEAR_KERNEL_MAX_ROWS


def test_the_row_thresholds_are_the_dispatchers():
    assert _dispatch.op("linear").kernel_max_rows == DENSE_MAX == lin.SMALL_M_MAX
    assert _dispatch.op("quantized_linear").kernel_max_rows == QUANTIZED_MAX == ql.SMALL_M_MAX


@cpu_only
@pytest.mark.parametrize("op, device, rows, forced, expected", [
    ("linear", CPU, DENSE_MAX, None, False),  # decode-sized: the kernel
    ("linear", CPU, DENSE_MAX + 1, None, True),  # prefill-sized: torch's matmul
    ("linear", CPU, DENSE_MAX + 1, "cpu", False),  # a forced backend runs every size
    ("linear", CPU, 1, "reference", False),
    ("linear", CUDA, 1, None, True),  # no linear kernel on GPUs: cuBLAS through torch
    ("linear", CPU, 1, "triton", True),  # a forced backend the op lacks: its torch route, every size
    ("quantized_linear", CPU, QUANTIZED_MAX, None, False),
    ("quantized_linear", CPU, QUANTIZED_MAX + 1, None, True),  # dequantized tiles + torch's matmul
    ("quantized_linear", CPU, QUANTIZED_MAX + 1, "reference", False),
    ("quantized_linear", CUDA, QUANTIZED_MAX + 1, None, False),  # the tiles need the cpu kernels
    ("quantized_linear", CPU, 1, "triton", True),
    ("quantized_linear", CUDA, 1, "triton", False),
    ("rms_norm", CPU, 1000, None, False),  # no torch route
])
def test_torch_route_by_rows_device_and_forced_backend(op, device, rows, forced, expected):
    with ops.use_backend(forced):
        assert _dispatch.takes_torch_route(op, device, rows) is expected


def test_cpu_kernels_may_run():
    assert _dispatch.cpu_kernels_may_run(CPU)
    assert not _dispatch.cpu_kernels_may_run(CUDA)
    with ops.use_backend("cpu"):
        assert _dispatch.cpu_kernels_may_run(CPU)
    with ops.use_backend("reference"):
        assert not _dispatch.cpu_kernels_may_run(CPU) and not _dispatch.automatic()
    assert _dispatch.automatic()


def test_an_invalid_backend_variable_raises_at_the_first_op_not_at_import():
    code = ("import torch, inference_pio.ops as ops\n"
            "try:\n    ops.rms_norm(torch.ones(1, 8), torch.ones(8))\n"
            "except ValueError as e:\n    print('ValueError:', e)\n")
    env = dict(os.environ, INFERENCE_PIO_BACKEND="tpu")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ValueError: INFERENCE_PIO_BACKEND='tpu' is not one of" in proc.stdout


# ---- the handles give the ops' results ----

def _dense(m, dtype, bias, k=96, n=37):
    x = randn(m, k, dtype=dtype, device="cpu")
    w = randn(n, k, dtype=dtype, device="cpu", scale=k**-0.5)
    return x, w, randn(n, dtype=dtype, device="cpu") if bias else None


@cpu_only
@pytest.mark.parametrize("forced", [None, "cpu", "reference"])
@pytest.mark.parametrize("use_out", [False, True], ids=["alloc", "out"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("m", [1, DENSE_MAX, DENSE_MAX + 1, 40])
def test_linear_handle_equals_the_op(m, dtype, bias, use_out, forced):
    x, w, b = _dense(m, dtype, bias)
    handle = lin.LinearHandle(w, b)
    out = poisoned_like(torch.empty(m, w.shape[0], dtype=dtype)) if use_out else None
    with ops.use_backend(forced):
        got = handle(x, out)
        expected = lin.linear(x, w, b)
    assert got is out or out is None
    assert torch.equal(got, expected)


@cpu_only
def test_linear_handle_takes_leading_dims_like_the_op():
    x, w, b = _dense(6, torch.bfloat16, True)
    assert torch.equal(lin.LinearHandle(w, b)(x.view(2, 3, -1)), lin.linear(x.view(2, 3, -1), w, b))


@cpu_only
@pytest.mark.parametrize("forced", [None, "cpu", "reference"])
@pytest.mark.parametrize("mode", ["none", "int16", "int8"])
@pytest.mark.parametrize("m", [1, QUANTIZED_MAX, QUANTIZED_MAX + 1])
def test_quantized_linear_handle_equals_the_op(m, mode, forced):
    qw = random_qweight(QTYPES[2], 33, 96, seed=3)
    x, bias = randn(m, 96, dtype=torch.bfloat16, device="cpu"), randn(33, dtype=torch.bfloat16, device="cpu")
    handle = ql.QuantizedLinearHandle(qw, bias, mode)
    out = poisoned_like(torch.empty(m, 33, dtype=torch.bfloat16))
    with ops.use_backend(forced):
        assert handle(x, out) is out
        expected = ql.quantized_linear(x, qw, bias, quantize_input=mode)
    assert torch.equal(out, expected)


@cpu_only
@pytest.mark.parametrize("forced", [None, "reference"])
def test_quantized_embedding_handle_equals_the_op(forced):
    qw = random_qweight(QTYPES[0], 50, 64)
    ids = torch.tensor([3, 49, 0, 3])
    with ops.use_backend(forced):
        assert torch.equal(ql.QuantizedEmbeddingHandle(qw)(ids, torch.bfloat16),
                           ql.quantized_embedding(ids, qw, torch.bfloat16))


# ---- the handles follow the dispatcher's decisions ----

class _Spy:
    """Counts calls, optionally refusing them."""

    def __init__(self, fn=None):
        self.fn, self.calls = fn, 0

    def __call__(self, *args):
        self.calls += 1
        if self.fn is None:
            raise AssertionError("this route must not run")
        return self.fn(*args)


@cpu_only
def test_handle_follows_a_changed_threshold(monkeypatch):
    # One value decides for the op and the handle: at 0 rows even M = 1 goes to torch's matmul.
    monkeypatch.setattr(_dispatch.op("linear"), "kernel_max_rows", 0)
    monkeypatch.setattr(_native.cpu_module(), "linear", _Spy())  # the kernel, as the handle resolves it
    x, w, b = _dense(1, torch.float32, True)
    torch.testing.assert_close(lin.LinearHandle(w, b)(x), F.linear(x, w, b))
    torch.testing.assert_close(lin.linear(x, w, b), F.linear(x, w, b))


@cpu_only
def test_handle_runs_the_kernel_it_resolved_only_on_the_automatic_route(monkeypatch):
    module = _native.cpu_module()
    kernel = _Spy(module.linear)
    monkeypatch.setattr(module, "linear", kernel)
    op = _dispatch.op("linear")
    reference = _Spy(op.implementation("reference"))
    monkeypatch.setitem(op._impls, "reference", reference)
    x, w, _ = _dense(1, torch.float32, False)
    handle = lin.LinearHandle(w)
    handle(x)
    assert (kernel.calls, reference.calls) == (1, 0)
    with ops.use_backend("reference"):
        handle(x)
    assert (kernel.calls, reference.calls) == (1, 1)
    with ops.use_backend("cpu"):  # forced cpu: through the op, the kernel at any size
        handle(randn(40, 96, device="cpu"))
    assert (kernel.calls, reference.calls) == (2, 1)
    handle(randn(40, 96, device="cpu"))  # automatic, prefill-sized: torch's matmul
    assert (kernel.calls, reference.calls) == (2, 1)


@cpu_only
def test_layer_fetches_its_handle_once_and_rebinds_when_the_weight_changes():
    layer = Linear(96, 37, bias=True, dtype=torch.bfloat16)
    _, w, b = _dense(1, torch.bfloat16, True)
    layer.weight.data.copy_(w)
    layer.bias.data.copy_(b)
    x = randn(1, 96, dtype=torch.bfloat16, device="cpu")
    first = layer(x).clone()
    handle = layer._handle
    assert torch.equal(layer(x), first) and layer._handle is handle  # fetched once
    assert torch.equal(first, lin.linear(x, layer.weight, layer.bias))

    layer.weight = torch.nn.Parameter(2 * w, requires_grad=False)  # another tensor: a new handle
    assert torch.equal(layer(x), lin.linear(x, 2 * w, b)) and layer._handle is not handle

    layer.to(torch.float32)  # the same Parameters, their data replaced: re-resolved by data pointer
    xf = x.float()
    assert torch.equal(layer(xf), lin.linear(xf, layer.weight, layer.bias))


@cpu_only
def test_quantized_layer_rebinds_when_its_mode_or_weight_changes():
    qw, qw2 = random_qweight(QTYPES[0], 24, 64, seed=1), random_qweight(QTYPES[0], 24, 64, seed=2)
    layer = QuantizedLinear(qw, bias=randn(24, device="cpu"))  # float32 bias, used with bf16 x too
    x = randn(2, 64, dtype=torch.bfloat16, device="cpu")
    bias_bf16 = layer.bias.detach().to(torch.bfloat16)
    for mode, weight in (("int16", qw), ("none", qw), ("int8", qw2)):
        layer.quantize_input, layer.qweight = mode, weight
        assert torch.equal(layer(x), ql.quantized_linear(x, weight, bias_bf16, quantize_input=mode))
    embedding = QuantizedEmbedding(qw, torch.bfloat16)
    ids = torch.tensor([5, 0])
    assert torch.equal(embedding(ids), ql.quantized_embedding(ids, qw, torch.bfloat16))
    embedding.qweight = qw2
    assert torch.equal(embedding(ids), ql.quantized_embedding(ids, qw2, torch.bfloat16))


# ---- torch.compile: the custom ops, decided by the dispatcher's decorator ----

def test_compiled_layer_goes_through_the_custom_op():
    torch._dynamo.reset()
    layer = Linear(32, 8, bias=True)
    layer.weight.data.copy_(randn(8, 32, device="cpu"))
    layer.bias.data.copy_(randn(8, device="cpu"))
    x = randn(2, 32, device="cpu")
    compiled = torch.compile(layer, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), F.linear(x, layer.weight, layer.bias))


def test_compiled_op_fills_a_given_out():
    torch._dynamo.reset()
    w = randn(16, device="cpu")

    def norm_into(x, out):
        return ops.rms_norm(x, w, 1e-6, out=out)

    x = randn(3, 16, device="cpu")
    out = poisoned_like(torch.empty(3, 16))
    result = torch.compile(norm_into, backend="eager", fullgraph=True)(x, out)
    torch.testing.assert_close(out, ops.rms_norm_reference(x, w, 1e-6))
    torch.testing.assert_close(result, out)
