"""quantized_linear: the CPU block kernels against the float64 product with gguf's dequantized weight.

Three input modes, every type (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K). Exact ("none"): the
float32 product with the dequantized weight, held to the dense linear's tolerances. "int16" and
"int8": x is rounded to integer blocks first; the kernel must equal the float64 product with x
rounded the same way (``quantize_input_reference``) to float32 tolerance, and differ from the
exact product by no more than the documented bound of that rounding (quantized_int16.h):
``sum_k |w[n, k]| * max|x_block| / (2 qmax) * (1 + 2^-7)``, qmax 32767 or 127.
"""

import importlib

import pytest
import torch

from inference_pio import _native, ops
from inference_pio.ops._tensor import optional_view, view
from inference_pio.quant import QuantizedTensor, UnsupportedQuantizationError
from .helpers import FLOAT_DTYPES, assert_close, poisoned_like, randn, runnable_backends
from .quantized_weights import QTYPES, block_size, random_qweight
from .tolerances import ATTENTION_TOLERANCES, TOLERANCES

ql = importlib.import_module("inference_pio.ops.quantized_linear")

cpu_only = pytest.mark.skipif(not _native.cpu_available(), reason="the C++ CPU extension is not available")

# (M, K choice, N). K: a multiple of the block but not of 256 for the 32-element types (19 blocks:
# an odd count, the AVX-512 tail of the byte kernel); the K-quants' block is 256. M: 1, 3 (a
# partial row tile), 5, 16, 17 (4 full tiles and one row), 64. N: 1, odd, fewer rows than a
# thread's share, 576 + 3.
SHAPES = [(1, 1, 1), (3, 1, 33), (2, 1, 7), (5, 2, 33), (16, 1, 579), (17, 2, 7), (64, 1, 33), (1, 2, 579)]
K_BY_BLOCK = {32: (96, 608), 256: (256, 512)}
MODES = ["none", "int16", "int8"]


def k_for(qtype, which):
    return K_BY_BLOCK[block_size(qtype)][which - 1]


def tolerances_for(k):
    return ATTENTION_TOLERANCES if k > 256 else TOLERANCES  # longer sums, more float32 rounding


def exact64(x, qw, bias):
    y = x.double() @ qw.dequantize(torch.float64).T
    return y if bias is None else y + bias.double()


def rounded64(x, qw, bias, mode):
    """The float64 product with x rounded as ``mode``'s kernels round it."""
    xs = x.double() if mode == "none" else ql.quantize_input_reference(x, mode)
    y = xs @ qw.dequantize(torch.float64).T
    return y if bias is None else y + bias.double()


def input_error_bound(x, qw, mode):
    """How far ``mode`` may move each output from the exact product: |W| @ the per-element bound."""
    return ql.input_error_bound(x, mode) @ qw.dequantize(torch.float64).abs().T


def assert_mode_result(out, x, qw, bias, mode, dtype, tolerances):
    assert_close(out, rounded64(x, qw, bias, mode), dtype, tolerances)
    if mode != "none":  # and the rounding of x costs no more than its documented bound
        atol, rtol = tolerances[dtype]
        exact = exact64(x, qw, bias)
        excess = (out.double() - exact).abs() - input_error_bound(x, qw, mode) - (atol + rtol * exact.abs())
        assert excess.max() <= 0, f"{mode} input error exceeds its bound by {excess.max().item():.3g}"


def run_kernel(x, qw, bias, quantize_input, backend="cpu"):
    out = poisoned_like(torch.empty(x.shape[0], qw.shape[0], dtype=x.dtype))
    with ops.use_backend(backend):
        result = ops.quantized_linear(x, qw, bias, out=out, quantize_input=quantize_input)
    assert result is out
    return out


TYPE_MODES = [pytest.param(q, mode, id=f"{q.name}-{mode}") for q in QTYPES for mode in MODES]


@cpu_only
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("qtype, mode", TYPE_MODES)
@pytest.mark.parametrize("m, which_k, n", SHAPES, ids=lambda v: str(v))
def test_matches_reference(m, which_k, n, qtype, dtype, mode):
    k = k_for(qtype, which_k)
    qw = random_qweight(qtype, n, k, seed=m * 1000 + n)
    x = randn(m, k, dtype=dtype, device="cpu")
    bias = randn(n, dtype=dtype, device="cpu") if m % 2 else None
    out = run_kernel(x, qw, bias, mode)
    assert_mode_result(out, x, qw, bias, mode, dtype, tolerances_for(k))


@pytest.mark.parametrize("backend", runnable_backends("quantized_linear", torch.device("cpu")))
@pytest.mark.parametrize("qtype, mode", TYPE_MODES)
def test_every_backend(backend, qtype, mode):
    k = k_for(qtype, 1)
    qw = random_qweight(qtype, 7, k, seed=3)
    x, bias = randn(3, k, device="cpu"), randn(7, device="cpu")
    assert_mode_result(run_kernel(x, qw, bias, mode, backend), x, qw, bias, mode, torch.float32, TOLERANCES)


@cpu_only
@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_int16_is_near_exact_and_int8_is_not(qtype):
    # The modes must really differ (no mode is secretly another), and int16 must be far closer to
    # the exact product than int8: its step is 258x finer.
    k = k_for(qtype, 2)
    qw = random_qweight(qtype, 64, k, seed=11)
    x = randn(3, k, device="cpu")
    exact = exact64(x, qw, None)
    errors = {mode: (run_kernel(x, qw, None, mode).double() - exact).abs().max().item() for mode in MODES}
    assert errors["none"] < 1e-4
    assert errors["int8"] > 1e-3
    assert 0 < errors["int16"] < errors["int8"] / 30
    bound = input_error_bound(x, qw, "int16")
    assert bound.max() < 2**-14 * (x.abs().max() * qw.dequantize(torch.float64).abs().sum(1).max())


@cpu_only
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_prefill_sized_input(dtype, mode):
    # M = 300: several L1 chunks of input rows (the cache blocking) and a remainder below 4 rows.
    qw = random_qweight(QTYPES[1], 37, 576)
    x = randn(300, 576, dtype=dtype, device="cpu")
    out = run_kernel(x, qw, None, mode)
    assert_close(out, rounded64(x, qw, None, mode), dtype, ATTENTION_TOLERANCES)


@cpu_only
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_large_m_exact_mode_routes_through_dequantized_tiles(monkeypatch, dtype, bias):
    # M = 40 > SMALL_M_MAX, exact mode, nothing forced: tiles of 7 weight rows (33 = 4 full tiles and a
    # partial one) dequantized into x's dtype and torch's matmul; the block kernel never runs.
    assert 40 > ql.SMALL_M_MAX
    monkeypatch.setattr(ql, "DEQUANT_TILE_BYTES", 7 * 96 * torch.empty(0, dtype=dtype).element_size())
    monkeypatch.setattr(ql, "_quantized_linear", lambda *a: pytest.fail("the block kernel ran for M > SMALL_M_MAX"))
    qw = random_qweight(QTYPES[2], 33, 96, seed=4)
    x = randn(40, 96, dtype=dtype, device="cpu")
    b = randn(33, dtype=dtype, device="cpu") if bias else None
    out = poisoned_like(torch.empty(4, 10, 33, dtype=dtype))
    assert ops.quantized_linear(x.view(4, 10, 96), qw, b, out=out, quantize_input="none") is out
    # The weight is rounded to x's dtype on this route, as a dense checkpoint in that dtype would be.
    w = qw.dequantize(torch.float64).to(dtype).double()
    expected = x.double() @ w.T + (0 if b is None else b.double())
    assert_close(out.view(40, 33), expected, dtype)


@cpu_only
@pytest.mark.parametrize("mode", ["int16", "int8"])
def test_large_m_integer_modes_run_the_kernel(monkeypatch, mode):
    # The integer modes keep the C++ kernel at every M (its GEMM from 10 rows beats the tiles).
    monkeypatch.setattr(ql, "quantized_linear_through_tiles", lambda *a: pytest.fail("the tiles ran"))
    qw = random_qweight(QTYPES[2], 33, 96, seed=4)
    x = randn(40, 96, device="cpu")
    out = ops.quantized_linear(x, qw, quantize_input=mode)
    assert_mode_result(out, x, qw, None, mode, torch.float32, TOLERANCES)


@cpu_only
@pytest.mark.parametrize("isa", _native.supported_cpu_isas())
@pytest.mark.parametrize("qtype, mode", TYPE_MODES)
@pytest.mark.parametrize("m", [1, 5, 17])
def test_every_cpu_isa(isa, qtype, mode, m):
    # The dispatcher uses the best ISA only; call each built module (AVX2, AVX-512, AVX512-VNNI) directly.
    # M = 5: a full 4-row tile and one more; 19 blocks: the odd-block tail of the AVX-512 modules.
    k = k_for(qtype, 2)
    qw = random_qweight(qtype, 33, k, seed=7)
    x, bias = randn(m, k, dtype=torch.bfloat16, device="cpu"), randn(33, dtype=torch.bfloat16, device="cpu")
    out = poisoned_like(torch.empty(m, 33, dtype=torch.bfloat16))
    _native.cpu_module(isa).quantized_linear(view(out), view(x), view(qw.data), qw.qtype, view(bias),
                                             ql.INPUT_MODES[mode])
    assert_mode_result(out, x, qw, bias, mode, torch.bfloat16, ATTENTION_TOLERANCES)


@cpu_only
def test_integer_dots_use_vnni_where_built():
    if "avx512bf16" not in _native.supported_cpu_isas():
        pytest.skip("this CPU cannot run the avx512bf16 module (built with VNNI)")
    assert _native.cpu_module("avx512bf16").quantized_vnni
    assert not _native.cpu_module("avx2").quantized_vnni


@cpu_only
@pytest.mark.parametrize("mode", MODES)
def test_leading_dims_strided_rows_and_allocation(mode):
    qw = random_qweight(QTYPES[1], 19, 96)
    base = randn(2, 3, 96 + 32, device="cpu")
    x = base[..., :96]  # row stride 128, last dim contiguous
    out = ops.quantized_linear(x, qw, quantize_input=mode)
    assert out.shape == (2, 3, 19) and out.is_contiguous()
    assert_close(out.view(6, 19), rounded64(x.reshape(6, 96), qw, None, mode), torch.float32)


@cpu_only
def test_empty_input():
    qw = random_qweight(QTYPES[0], 8, 64)
    assert ops.quantized_linear(torch.empty(0, 64), qw).shape == (0, 8)


@cpu_only
@pytest.mark.parametrize("qtype, mode", TYPE_MODES)
def test_nonfinite_input_propagates(qtype, mode):
    k = k_for(qtype, 1)
    qw = random_qweight(qtype, 16, k)
    x = randn(2, k, device="cpu")
    x[0, 7] = float("nan")
    x[1, 40] = float("inf")
    out = ops.quantized_linear(x, qw, quantize_input=mode)
    assert not torch.isfinite(out).any()  # every output meets the bad element: none may come out finite


def test_default_mode_follows_the_environment(monkeypatch):
    monkeypatch.delenv(ql.QUANTIZE_INPUT_ENV, raising=False)
    assert ql.default_quantize_input() == "int16"
    for value, mode in [("none", "none"), ("int16", "int16"), ("int8", "int8"), ("1", "int8"), ("0", "none")]:
        monkeypatch.setenv(ql.QUANTIZE_INPUT_ENV, value)
        assert ql.default_quantize_input() == mode
        assert ql.input_mode(None) == mode
    monkeypatch.setenv(ql.QUANTIZE_INPUT_ENV, "yes")
    with pytest.raises(ValueError, match=ql.QUANTIZE_INPUT_ENV):
        ql.default_quantize_input()


def test_mode_names_and_the_old_booleans():
    assert [ql.input_mode(v) for v in (True, False, "int16")] == ["int8", "none", "int16"]
    assert [ql.input_mode_code(v) for v in (True, False, "none", "int8", "int16")] == [1, 0, 0, 1, 2]
    with pytest.raises(ValueError, match="quantize_input must be one of"):
        ql.input_mode("int4")
    with pytest.raises(ValueError, match="quantize_input must be one of"):
        ops.quantized_linear(randn(1, 64, device="cpu"), random_qweight(QTYPES[0], 8, 64), quantize_input="fp8")


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_reference_uses_ggufs_dequantizer(qtype):
    k = block_size(qtype)
    qw = random_qweight(qtype, 5, k)
    x = randn(2, k, device="cpu")
    from gguf.quants import dequantize

    w = torch.from_numpy(dequantize(qw.data.numpy(), qw.qtype)).reshape(5, k)
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
    with pytest.raises(UnsupportedQuantizationError, match="Q8_1 is not supported"):
        QuantizedTensor(torch.zeros(8, 2 * 36, dtype=torch.uint8), 9, (8, 64))  # ggml type 9 = Q8_1


@cpu_only
def test_cpu_kernel_checks_its_arguments():
    # The layers call the kernel unchecked: the C++ side must still refuse bad views.
    m = _native.cpu_module()
    qw = _qw()
    x, out, data = randn(3, 64, device="cpu"), torch.empty(3, 8), qw.data
    cases = [
        (lambda: m.quantized_linear(view(out), view(x), view(data), 9, None, 0), "qtype"),  # Q8_1
        (lambda: m.quantized_linear(view(out), view(x), view(data), qw.qtype, None, 3), "input_mode"),
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
