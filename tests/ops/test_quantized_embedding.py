"""quantized_embedding: rows of GGUF blocks dequantized by the CPU kernel against gguf's dequantizer;
and the layers (QuantizedLinear, QuantizedEmbedding, swap_in_quantized) over the kernels."""

import importlib

import pytest
import torch
import torch.nn as nn

from inference_pio import _native, ops
from inference_pio.layers import QuantizedEmbedding, QuantizedLinear, swap_in_quantized
from inference_pio.ops._tensor import view
from .helpers import FLOAT_DTYPES, assert_close, poisoned_like, randn, runnable_backends
from .quantized_weights import QTYPES, block_size, random_qweight
from .tolerances import TOLERANCES

ql = importlib.import_module("inference_pio.ops.quantized_linear")

cpu_only = pytest.mark.skipif(not _native.cpu_available(), reason="the C++ CPU extension is not available")


def dequantized64(qw):
    return qw.dequantize(torch.float64)


@pytest.mark.parametrize("backend", runnable_backends("quantized_embedding", torch.device("cpu")))
@pytest.mark.parametrize("ids_dtype", [torch.int32, torch.int64], ids=str)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_matches_ggufs_dequantizer(backend, qtype, dtype, ids_dtype):
    hidden = 3 * block_size(qtype)
    qw = random_qweight(qtype, 37, hidden, seed=3)
    ids = torch.tensor([5, 0, 36, 5, 17, 2, 36], dtype=ids_dtype)  # repeats, first and last rows
    out = poisoned_like(torch.empty(7, hidden, dtype=dtype))
    with ops.use_backend(backend):
        result = ops.quantized_embedding(ids, qw, out=out)
    assert result is out
    # Scaled to the rows' magnitude: d * q + m may be one fused rounding here, two in numpy.
    scale = dequantized64(qw).abs().max()
    assert_close(out / scale, dequantized64(qw)[ids.long()] / scale, dtype)


@cpu_only
@pytest.mark.parametrize("isa", _native.supported_cpu_isas())
@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_every_cpu_isa(isa, qtype):
    qw = random_qweight(qtype, 9, block_size(qtype), seed=1)
    ids = torch.tensor([8, 1, 4])
    out = poisoned_like(torch.empty(3, block_size(qtype), dtype=torch.bfloat16))
    _native.cpu_module(isa).quantized_embedding(view(out), view(ids), view(qw.data), qw.qtype)
    assert_close(out, dequantized64(qw)[ids], torch.bfloat16)


def test_allocates_in_the_requested_dtype_with_the_ids_shape():
    qw = random_qweight(QTYPES[0], 10, 64)
    ids = torch.tensor([[1, 2, 3], [4, 5, 9]])
    out = ops.quantized_embedding(ids, qw, torch.bfloat16)
    assert out.shape == (2, 3, 64) and out.dtype == torch.bfloat16
    assert_close(out, dequantized64(qw)[ids], torch.bfloat16)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("bad_id", [10, -1])
def test_out_of_range_ids_raise(backend, bad_id):
    if backend == "cpu" and not _native.cpu_available():
        pytest.skip("no C++ extension")
    qw = random_qweight(QTYPES[1], 10, 64)
    with ops.use_backend(backend), pytest.raises(ValueError, match=rf"^ids must be in \[0, 10\).*got {bad_id}"):
        ops.quantized_embedding(torch.tensor([1, bad_id, 2]), qw)


@pytest.mark.parametrize(
    "call, error, arg",
    [
        (lambda qw: ops.quantized_embedding(torch.tensor([1.0]), qw), ValueError, "ids"),
        (lambda qw: ops.quantized_embedding([1], qw), TypeError, "ids"),
        (lambda qw: ops.quantized_embedding(torch.tensor([1]), qw.dequantize()), TypeError, "qweight"),
        (lambda qw: ops.quantized_embedding(torch.tensor([1]), qw, torch.int32), ValueError, "dtype"),
        (lambda qw: ops.quantized_embedding(torch.tensor([1]), qw, out=torch.empty(2, 64)), ValueError, "out"),
        (lambda qw: ops.quantized_embedding(torch.tensor([1]), qw, out=torch.empty(1, 64, dtype=torch.int32)),
         ValueError, "out"),
    ],
)
def test_bad_input_raises(call, error, arg):
    with pytest.raises(error, match=rf"^{arg}\b"):
        call(random_qweight(QTYPES[0], 10, 64))


@cpu_only
def test_cpu_kernel_checks_its_arguments():
    m = _native.cpu_module()
    qw = random_qweight(QTYPES[0], 10, 64)
    ids, out = torch.tensor([1, 2]), torch.empty(2, 64)
    cases = [
        (lambda: m.quantized_embedding(view(out), view(torch.tensor([1, 10])), view(qw.data), qw.qtype), "ids"),
        (lambda: m.quantized_embedding(view(out), view(ids.float()), view(qw.data), qw.qtype), "ids"),
        (lambda: m.quantized_embedding(view(torch.empty(3, 64)), view(ids), view(qw.data), qw.qtype), "out"),
        (lambda: m.quantized_embedding(view(torch.empty(2, 40)), view(ids), view(qw.data), qw.qtype), "out"),
        (lambda: m.quantized_embedding(view(out), view(ids), view(qw.data[:, :34]), qw.qtype), "weight"),
        (lambda: m.quantized_embedding(view(out), view(ids), view(qw.data), 99), "qtype"),
    ]
    for call, arg in cases:
        with pytest.raises(ValueError, match=rf"^{arg}\b"):
            call()
    assert torch.isnan(poisoned_like(out)).all()  # (the poisoned helper itself works)


# ---- layers ----

def _dense_copies(module: nn.Module, numel: int) -> list[str]:
    """Names of float tensors of ``numel`` elements the module holds (a dequantized weight would be one)."""
    found = [name for name, t in module.state_dict().items() if t.is_floating_point() and t.numel() == numel]
    found += [name for name, t in vars(module).items()
              if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() == numel]
    return found


@pytest.mark.parametrize("backend", [None, "reference"])
@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_quantized_linear_layer(backend, qtype):
    k = 2 * block_size(qtype)
    qw = random_qweight(qtype, 24, k, seed=5)
    layer = QuantizedLinear(qw, bias=randn(24, device="cpu"))  # a float32 bias, used with bf16 inputs too
    assert layer.quantize_input == "int16"  # the default: x rounded to int16 blocks (near-exact)
    for dtype in (torch.float32, torch.bfloat16):
        x = randn(3, k, dtype=dtype, device="cpu")
        out = poisoned_like(torch.empty(3, 24, dtype=dtype))
        with ops.use_backend(backend):
            assert layer(x, out=out) is out
            allocated = layer(x)
        expected = ql.quantize_input_reference(x, "int16") @ dequantized64(qw).T + layer.bias.to(dtype).double()
        assert_close(out, expected, dtype, TOLERANCES)
        assert torch.equal(allocated, out)
    assert _dense_copies(layer, 24 * k) == []


@pytest.mark.parametrize("mode", ["none", "int16"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_quantized_linear_layer_prefill_rows(dtype, mode):
    # More rows than the batch-1 kernel takes: exact products go through the tile route, the integer
    # modes through the kernel's integer GEMM; buffers reused across calls, no dense copy of the weight.
    qw = random_qweight(QTYPES[1], 40, 64, seed=6)
    layer = QuantizedLinear(qw)
    layer.quantize_input = mode
    w = dequantized64(qw).to(dtype).double() if mode == "none" else dequantized64(qw)
    for m in (48, 48, 20):
        x = randn(m, 64, dtype=dtype, device="cpu")
        out = poisoned_like(torch.empty(m, 40, dtype=dtype))
        assert layer(x, out=out) is out
        xs = x.double() if mode == "none" else ql.quantize_input_reference(x, mode)
        assert_close(out, xs @ w.T, dtype, TOLERANCES)
    assert _dense_copies(layer, 40 * 64) == []


@cpu_only
def test_quantized_linear_layer_int8_input_mode(monkeypatch):
    monkeypatch.setenv(ql.QUANTIZE_INPUT_ENV, "1")
    qw = random_qweight(QTYPES[0], 16, 64)
    layer = QuantizedLinear(qw)
    assert layer.quantize_input == "int8"
    x = randn(2, 64, device="cpu")
    assert_close(layer(x), ql.quantize_input_reference(x) @ dequantized64(qw).T, torch.float32)


@pytest.mark.parametrize("backend", [None, "reference"])
def test_quantized_embedding_layer(backend):
    qw = random_qweight(QTYPES[0], 50, 64)
    layer = QuantizedEmbedding(qw, torch.bfloat16)
    ids = torch.tensor([3, 49, 0])
    out = poisoned_like(torch.empty(3, 64, dtype=torch.bfloat16))
    with ops.use_backend(backend):
        assert layer(ids, out=out) is out
        assert torch.equal(layer(ids), out)
    assert_close(out, dequantized64(qw)[ids], torch.bfloat16)
    assert _dense_copies(layer, 50 * 64) == []


def test_swap_in_quantized():
    torch.manual_seed(0)
    model = nn.Module()
    model.embed = nn.Embedding(40, 64)
    model.block = nn.Module()
    model.block.proj = nn.Linear(64, 33, bias=True)
    model.head = nn.Linear(64, 40, bias=False)
    q_embed, q_proj = random_qweight(QTYPES[0], 40, 64), random_qweight(QTYPES[2], 33, 64, seed=2)
    bias = randn(33, device="cpu")
    state = {"embed.weight": q_embed, "block.proj.weight": q_proj, "block.proj.bias": bias,
             "head.weight": model.head.weight.detach().clone()}
    swapped = swap_in_quantized(model, state)
    assert sorted(swapped) == ["block.proj", "embed"]
    assert list(state) == ["head.weight"]  # the dense rest goes to load_state_dict
    assert isinstance(model.embed, QuantizedEmbedding) and isinstance(model.block.proj, QuantizedLinear)
    ids = torch.tensor([1, 39, 7])
    h = model.embed(ids)
    assert_close(h, dequantized64(q_embed)[ids], torch.float32)
    y = model.block.proj(h)
    assert_close(y, h.double() @ dequantized64(q_proj).T + bias.double(), torch.float32)


def test_swap_in_quantized_rejects_a_misfit():
    model = nn.Module()
    model.proj = nn.Linear(64, 32)
    with pytest.raises(ValueError, match=r"proj.weight: quantized shape \[33, 64\] does not fit \[32, 64\]"):
        swap_in_quantized(model, {"proj.weight": random_qweight(QTYPES[0], 33, 64)})
