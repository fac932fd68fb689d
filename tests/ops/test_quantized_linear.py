"""quantized_linear: the CPU block kernels against the float64 product with gguf's dequantized weight.

Two modes. Exact: the float32 product with the dequantized weight, held to the dense linear's
tolerances. Int8 input (Q8_0 / Q4_0 / Q4_1): x is rounded to int8 blocks first; the kernel must
equal the float64 product with x rounded the same way (``quantize_input_reference``) to float32
tolerance, and differ from the exact product by no more than that rounding allows.
"""

import importlib

import pytest
import torch

from inference_pio import _native, ops
from inference_pio.ops._tensor import optional_view, view
from inference_pio.quant import QuantizedTensor, UnsupportedQuantizationError
from .helpers import FLOAT_DTYPES, assert_close, poisoned_like, randn, runnable_backends
from .quantized_weights import INT8_INPUT_QTYPES, QTYPES, block_size, random_qweight
from .tolerances import ATTENTION_TOLERANCES, TOLERANCES

ql = importlib.import_module("inference_pio.ops.quantized_linear")

cpu_only = pytest.mark.skipif(not _native.cpu_available(), reason="the C++ CPU extension is not available")

# K: a multiple of the block but not of 256 for the 32-element types (19 blocks: an odd count, the
# AVX-512 tail); the K-quants' block is 256. N: 1, fewer rows than a thread's share, 576 + 3.
SHAPES = [(1, 1, 1), (2, 1, 7), (5, 2, 33), (16, 1, 579), (17, 2, 7), (64, 1, 33), (1, 2, 579)]
K_BY_BLOCK = {32: (96, 608), 256: (256, 512)}
MODES = [False, True]


def k_for(qtype, which):
    return K_BY_BLOCK[block_size(qtype)][which - 1]


def tolerances_for(k):
    return ATTENTION_TOLERANCES if k > 256 else TOLERANCES  # longer sums, more float32 rounding


def exact64(x, qw, bias):
    y = x.double() @ qw.dequantize(torch.float64).T
    return y if bias is None else y + bias.double()


def int8_input64(x, qw, bias):
    y = ql.quantize_input_reference(x) @ qw.dequantize(torch.float64).T
    return y if bias is None else y + bias.double()


def int8_input_error_bound(x, qw):
    """|int8-input result - exact| <= sum_k |w[n, k]| * d(block of k) / 2 per output (d = max|x_block| / 127)."""
    k = x.shape[-1]
    d = x.double().reshape(x.shape[0], k // 32, 32).abs().amax(-1) / 127
    return (d.repeat_interleave(32, dim=1) / 2) @ qw.dequantize(torch.float64).abs().T


def run_kernel(x, qw, bias, quantize_input, backend="cpu"):
    out = poisoned_like(torch.empty(x.shape[0], qw.shape[0], dtype=x.dtype))
    with ops.use_backend(backend):
        result = ops.quantized_linear(x, qw, bias, out=out, quantize_input=quantize_input)
    assert result is out
    return out


# (qtype, quantize_input): the K-quants always compute exactly.
TYPE_MODES = [pytest.param(q, mode, id=f"{q.name}-{'int8_input' if mode else 'exact'}")
              for q in QTYPES for mode in MODES if q in INT8_INPUT_QTYPES or not mode]


@pytest.mark.parametrize("backend", runnable_backends("quantized_linear", torch.device("cpu")))
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("qtype, quantize_input", TYPE_MODES)
@pytest.mark.parametrize("m, which_k, n", SHAPES, ids=lambda v: str(v))
def test_matches_reference(backend, m, which_k, n, qtype, dtype, quantize_input):
    k = k_for(qtype, which_k)
    qw = random_qweight(qtype, n, k, seed=m * 1000 + n)
    x = randn(m, k, dtype=dtype, device="cpu")
    bias = randn(n, dtype=dtype, device="cpu") if m % 2 else None
    out = run_kernel(x, qw, bias, quantize_input, backend)
    expected = int8_input64(x, qw, bias) if quantize_input else exact64(x, qw, bias)
    assert_close(out, expected, dtype, tolerances_for(k))
    if quantize_input:  # and the rounding of x costs no more than it may
        atol, rtol = tolerances_for(k)[dtype]
        slack = atol + rtol * exact64(x, qw, bias).abs()
        excess = (out.double() - exact64(x, qw, bias)).abs() - int8_input_error_bound(x, qw) - slack
        assert excess.max() <= 0, f"int8-input error exceeds its bound by {excess.max().item():.3g}"


@cpu_only
@pytest.mark.parametrize("qtype", INT8_INPUT_QTYPES, ids=lambda q: q.name)
def test_int8_input_is_not_the_exact_product(qtype):
    # The two modes must really differ (the int8 path is not secretly the exact one, or vice versa).
    qw = random_qweight(qtype, 64, 256)
    x = randn(3, 256, device="cpu")
    exact, rounded = run_kernel(x, qw, None, False), run_kernel(x, qw, None, True)
    assert_close(exact, exact64(x, qw, None), torch.float32)
    assert (exact - rounded).abs().max() > 1e-4


@cpu_only
@pytest.mark.parametrize("quantize_input", MODES, ids=["exact", "int8_input"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_prefill_sized_input(dtype, quantize_input):
    # M = 300: several L1 chunks of input rows (the cache blocking) and a remainder below 4 rows.
    qw = random_qweight(ql.INT8_INPUT_QTYPES[0], 37, 576)
    x = randn(300, 576, dtype=dtype, device="cpu")
    out = run_kernel(x, qw, None, quantize_input)
    expected = int8_input64(x, qw, None) if quantize_input else exact64(x, qw, None)
    assert_close(out, expected, dtype, ATTENTION_TOLERANCES)


@cpu_only
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_large_m_routes_through_dequantized_tiles(monkeypatch, dtype, bias):
    # M = 40 > SMALL_M_MAX, nothing forced: tiles of 7 weight rows (33 = 4 full tiles and a partial
    # one) dequantized into x's dtype and torch's matmul; the block kernel never runs.
    assert 40 > ql.SMALL_M_MAX
    monkeypatch.setattr(ql, "DEQUANT_TILE_BYTES", 7 * 96 * torch.empty(0, dtype=dtype).element_size())
    monkeypatch.setattr(ql, "_quantized_linear", lambda *a: pytest.fail("the block kernel ran for M > SMALL_M_MAX"))
    qw = random_qweight(ql.INT8_INPUT_QTYPES[1], 33, 96, seed=4)
    x = randn(40, 96, dtype=dtype, device="cpu")
    b = randn(33, dtype=dtype, device="cpu") if bias else None
    out = poisoned_like(torch.empty(4, 10, 33, dtype=dtype))
    assert ops.quantized_linear(x.view(4, 10, 96), qw, b, out=out, quantize_input=True) is out
    # The weight is rounded to x's dtype on this route, as a dense checkpoint in that dtype would be.
    w = qw.dequantize(torch.float64).to(dtype).double()
    expected = x.double() @ w.T + (0 if b is None else b.double())
    assert_close(out.view(40, 33), expected, dtype)


@cpu_only
@pytest.mark.parametrize("isa", _native.supported_cpu_isas())
@pytest.mark.parametrize("qtype, quantize_input", TYPE_MODES)
def test_every_cpu_isa(isa, qtype, quantize_input):
    # The dispatcher uses the best ISA only; call each built module (AVX2, AVX-512, AVX512-VNNI) directly.
    # M = 5: a full 4-row tile and one more; 19 blocks: the odd-block tail of the AVX-512 modules.
    k = k_for(qtype, 2)
    qw = random_qweight(qtype, 33, k, seed=7)
    x, bias = randn(5, k, dtype=torch.bfloat16, device="cpu"), randn(33, dtype=torch.bfloat16, device="cpu")
    out = poisoned_like(torch.empty(5, 33, dtype=torch.bfloat16))
    _native.cpu_module(isa).quantized_linear(view(out), view(x), view(qw.data), qw.qtype, view(bias), quantize_input)
    expected = int8_input64(x, qw, bias) if quantize_input else exact64(x, qw, bias)
    assert_close(out, expected, torch.bfloat16, ATTENTION_TOLERANCES)


@cpu_only
def test_int8_input_uses_vnni_where_built():
    if "avx512bf16" not in _native.supported_cpu_isas():
        pytest.skip("this CPU cannot run the avx512bf16 module (built with VNNI)")
    assert _native.cpu_module("avx512bf16").quantized_vnni
    assert not _native.cpu_module("avx2").quantized_vnni


@cpu_only
@pytest.mark.parametrize("quantize_input", MODES, ids=["exact", "int8_input"])
def test_leading_dims_strided_rows_and_allocation(quantize_input):
    qw = random_qweight(ql.INT8_INPUT_QTYPES[1], 19, 96)
    base = randn(2, 3, 96 + 32, device="cpu")
    x = base[..., :96]  # row stride 128, last dim contiguous
    out = ops.quantized_linear(x, qw, quantize_input=quantize_input)
    assert out.shape == (2, 3, 19) and out.is_contiguous()
    reference = int8_input64 if quantize_input else exact64
    assert_close(out.view(6, 19), reference(x.reshape(6, 96), qw, None), torch.float32)


@cpu_only
def test_empty_input():
    qw = random_qweight(QTYPES[0], 8, 64)
    assert ops.quantized_linear(torch.empty(0, 64), qw).shape == (0, 8)


@cpu_only
@pytest.mark.parametrize("quantize_input", MODES, ids=["exact", "int8_input"])
def test_nonfinite_input_propagates(quantize_input):
    qw = random_qweight(QTYPES[1], 16, 64)
    x = randn(2, 64, device="cpu")
    x[0, 7] = float("nan")
    x[1, 40] = float("inf")
    out = ops.quantized_linear(x, qw, quantize_input=quantize_input)
    assert not torch.isfinite(out).any()  # every output meets the bad element: none may come out finite


def test_default_mode_follows_the_environment(monkeypatch):
    monkeypatch.delenv(ql.QUANTIZE_INPUT_ENV, raising=False)
    assert ql.default_quantize_input() is False
    monkeypatch.setenv(ql.QUANTIZE_INPUT_ENV, "1")
    assert ql.default_quantize_input() is True
    monkeypatch.setenv(ql.QUANTIZE_INPUT_ENV, "yes")
    with pytest.raises(ValueError, match=ql.QUANTIZE_INPUT_ENV):
        ql.default_quantize_input()


def test_reference_uses_ggufs_dequantizer():
    qw = random_qweight(QTYPES[2], 5, 64)
    x = randn(2, 64, device="cpu")
    from gguf.quants import dequantize

    w = torch.from_numpy(dequantize(qw.data.numpy(), qw.qtype)).reshape(5, 64)
    torch.testing.assert_close(ql.quantized_linear_reference(x, qw), (x.double() @ w.double().T).float())


# Bad input: a clear exception naming the argument.
def _qw(qtype=QTYPES[0]):
    return random_qweight(qtype, 8, 64)


BAD_INPUTS = [
    (lambda: (randn(3, 64, device="cpu").double(), _qw(), None), ValueError, "x"),
    (lambda: (torch.ones(3, 64, dtype=torch.int32), _qw(), None), ValueError, "x"),
    (lambda: (randn(64, 3, device="cpu").t(), _qw(), None), ValueError, "x"),  # last dim not contiguous
    (lambda: (randn(3, 4, 64, device="cpu").transpose(0, 1), _qw(), None), ValueError, "x"),  # rows cannot merge
    (lambda: (randn(3, 96, device="cpu"), _qw(), None), ValueError, "x"),  # K mismatch
    (lambda: (randn(3, 64, device="cpu"), randn(8, 64, device="cpu"), None), TypeError, "qweight"),  # dense
    (lambda: (randn(3, 64, device="cpu"), _qw(), randn(7, device="cpu")), ValueError, "bias"),
    (lambda: (randn(3, 64, device="cpu"), _qw(), randn(8, device="cpu").half()), ValueError, "bias"),
    (lambda: (randn(3, 64, device="cpu"), _qw(), randn(16, device="cpu")[::2]), ValueError, "bias"),
]


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("make_args, error, arg", BAD_INPUTS)
def test_bad_input_raises(backend, make_args, error, arg):
    if backend == "cpu" and not _native.cpu_available():
        pytest.skip("no C++ extension")
    with ops.use_backend(backend), pytest.raises(error, match=rf"^{arg}\b"):
        ops.quantized_linear(*make_args())


@pytest.mark.parametrize("make_out", [lambda: torch.empty(3, 7), lambda: torch.empty(3, 8).half(),
                                      lambda: torch.empty(8, 3).t()])
def test_bad_out_raises(make_out):
    with pytest.raises(ValueError, match=r"^out\b"):
        ops.quantized_linear(randn(3, 64, device="cpu"), _qw(), out=make_out())


def test_unsupported_type_is_a_clear_error():
    with pytest.raises(UnsupportedQuantizationError, match="Q5_0 is not supported"):
        QuantizedTensor(torch.zeros(8, 2 * 22, dtype=torch.uint8), 6, (8, 64))  # ggml type 6 = Q5_0


@cpu_only
def test_cpu_kernel_checks_its_arguments():
    # The layers call the kernel unchecked: the C++ side must still refuse bad views.
    m = _native.cpu_module()
    qw = _qw()
    x, out, data = randn(3, 64, device="cpu"), torch.empty(3, 8), qw.data
    cases = [
        (lambda: m.quantized_linear(view(out), view(x), view(data), 6, None, False), "qtype"),  # Q5_0
        (lambda: m.quantized_linear(view(out), view(x), view(data[:, :34]), qw.qtype, None, False), "weight"),
        (lambda: m.quantized_linear(view(out), view(x), view(data.float()), qw.qtype, None, False), "weight"),
        (lambda: m.quantized_linear(view(out), view(x[:, :48]), view(data), qw.qtype, None, False), "x"),
        (lambda: m.quantized_linear(view(out), view(x[:, :40]), view(data), qw.qtype, None, False), "x"),  # K % 32
        (lambda: m.quantized_linear(view(out), view(x), view(data), qw.qtype, view(randn(7, device="cpu")), True),
         "bias"),
        (lambda: m.quantized_linear(view(torch.empty(3, 7)), view(x), view(data), qw.qtype, None, True), "out"),
        (lambda: m.quantized_linear(view(out.half()), view(x), view(data), qw.qtype, None, True), "out"),
        (lambda: m.quantized_linear(view(out), view(x.double()), view(data), qw.qtype, None, True), "x"),
        (lambda: m.quantized_linear(view(out), view(x), view(torch.empty(16, 8, dtype=torch.uint8).t()), qw.qtype,
                                    optional_view(None), True), "weight"),
    ]
    for call, arg in cases:
        with pytest.raises(ValueError, match=rf"^{arg}\b"):
            call()
