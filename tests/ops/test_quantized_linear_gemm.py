"""quantized_linear's integer GEMM (csrc/kernels/cpu/quantized_gemm.h): the C++ kernel's path for
M >= 10 rows (AVX-512; 8 on AVX2) in the int16 and int8 input modes (batch decode, prompts).

Against the float64 product with gguf's dequantized weight, on odd shapes (M around the 8 / 16-row
vectors and the 2-vector register tile, K a multiple of the block but not of 256, N not a multiple of
the 2 / 4-row weight panel), poisoned outputs: equal to the product with x rounded as the mode
rounds it, and no further from the exact product than the documented input-rounding bound
(2^-16 of the block's max per element for int16). Also: a row's result does not depend on the
batch it is in (the GEMM treats each row alike), the row kernel (M < 8) and the GEMM agree to
float32 rounding, and the int32 sums of the largest weights cannot overflow.
"""

import importlib

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q

from inference_pio import _native, ops
from inference_pio.ops._tensor import view
from inference_pio.quant import QuantizedTensor
from .helpers import poisoned_like, randn
from .quantized_weights import QTYPES, block_size, random_qweight
from .test_quantized_linear import assert_mode_result, exact64, input_error_bound, run_kernel
from .tolerances import ATTENTION_TOLERANCES

ql = importlib.import_module("inference_pio.ops.quantized_linear")

pytestmark = pytest.mark.skipif(not _native.cpu_available(), reason="the C++ CPU extension is not available")

GEMM_ROWS = 16  # from here the GEMM runs on every ISA (quantized_gemm.h kGemmMinRows: 10 or 8)
M_VALUES = [1, 2, 3, 5, 8, 10, 17, 33, 64, 130]
INT_MODES = ["int16", "int8"]


def k_for(qtype):
    return 608 if block_size(qtype) == 32 else 768  # 19 blocks of 32; 3 blocks of 256


@pytest.mark.parametrize("mode", INT_MODES)
@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("m", M_VALUES)
def test_matches_reference_on_odd_shapes(m, qtype, mode):
    k, n = k_for(qtype), 37
    qw = random_qweight(qtype, n, k, seed=m)
    x = randn(m, k, device="cpu")
    bias = randn(n, device="cpu") if m % 2 else None
    assert_mode_result(run_kernel(x, qw, bias, mode), x, qw, bias, mode, torch.float32, ATTENTION_TOLERANCES)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_K, Q.Q6_K], ids=lambda q: q.name)
def test_half_precision_inputs_and_strided_rows(qtype, dtype):
    k = k_for(qtype)
    qw = random_qweight(qtype, 21, k, seed=5)
    x = randn(40, k + 64, dtype=dtype, device="cpu")[:, :k]  # row stride k + 64
    out = run_kernel(x, qw, None, "int16")
    assert_mode_result(out, x, qw, None, "int16", dtype, ATTENTION_TOLERANCES)


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_a_rows_result_does_not_depend_on_its_batch(qtype):
    # Every row is computed by the same operations in its own lane: bit-identical in any batch of
    # GEMM size, at any position (so batching decode requests never changes a greedy token).
    k = k_for(qtype)
    qw = random_qweight(qtype, 19, k, seed=2)
    x = randn(130, k, device="cpu")
    whole = run_kernel(x, qw, None, "int16")
    for rows in (slice(0, 16), slice(3, 20), slice(97, 130), slice(50, 114)):
        assert torch.equal(run_kernel(x[rows].contiguous(), qw, None, "int16"), whole[rows])


@pytest.mark.parametrize("mode", INT_MODES)
@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_gemm_and_row_kernel_agree_to_float32_rounding(qtype, mode):
    # The same integers: the GEMM (17 rows) and the row kernel (one row at a time) differ only in
    # the order of the float32 additions, far inside the input-rounding bound.
    k = k_for(qtype)
    qw = random_qweight(qtype, 23, k, seed=4)
    x = randn(GEMM_ROWS + 1, k, device="cpu")
    batched = run_kernel(x, qw, None, mode).double()
    single = torch.cat([run_kernel(x[i:i + 1], qw, None, mode) for i in range(x.shape[0])]).double()
    scale = ql.quantize_input_reference(x, mode).abs() @ qw.dequantize(torch.float64).abs().T
    assert ((batched - single).abs() <= 2**-20 * scale + 1e-30).all()
    assert ((batched - single).abs() <= input_error_bound(x, qw, mode)).all()


def _fp16(value):
    return np.frombuffer(np.float16(value).tobytes(), dtype=np.uint8)


def _largest_weight_blocks(qtype, n, k):
    """Blocks whose every dequantized weight has the largest integer magnitude the type allows."""
    blocks_per_row = k // GGML_QUANT_SIZES[qtype][0]
    size = GGML_QUANT_SIZES[qtype][1]
    b = np.zeros(size, dtype=np.uint8)
    if qtype == Q.Q8_0:  # d, q = -128
        b[0:2], b[2:] = _fp16(1e-3), 0x80
    elif qtype == Q.Q5_K:  # d, dmin = 0; 6-bit scales 63, mins 0; 5-bit values 31
        b[0:2] = _fp16(1e-5)
        b[4:8], b[8:12], b[12:16] = 0xFF, 0x00, 0x0F
        b[16:] = 0xFF
    else:  # Q6_K: values q - 32 = -32 (ql, qh all zero), 16-element scales -128, d last
        b[192:208] = 0x80
        b[208:210] = _fp16(1e-5)
    data = np.tile(b, (n, blocks_per_row))
    return QuantizedTensor(torch.from_numpy(data), qtype, (n, k))


@pytest.mark.parametrize("m", [1, GEMM_ROWS + 1])
@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q5_K, Q.Q6_K], ids=lambda q: q.name)
def test_int32_sums_of_the_largest_weights_do_not_overflow(qtype, m):
    # All-equal inputs round to q = +-32767 everywhere: the largest products the int32 sums meet
    # (Q6_K's 32-product sum would wrap; the kernel sums 16 at a time).
    k = 512
    qw = _largest_weight_blocks(qtype, 5, k)
    x = torch.ones(m, k)
    x[1::2] = -1.0
    out = run_kernel(x, qw, None, "int16")
    exact = exact64(x, qw, None)
    assert torch.allclose(out.double(), exact, rtol=1e-5, atol=0)


@pytest.mark.parametrize("mode", INT_MODES)
def test_nonfinite_input_poisons_only_its_row(mode):
    qw = random_qweight(Q.Q4_K, 9, 512)
    x = randn(GEMM_ROWS + 3, 512, device="cpu")
    x[2, 7], x[17, 300] = float("nan"), float("inf")
    out = ops.quantized_linear(x, qw, quantize_input=mode)
    bad = torch.zeros(x.shape[0], dtype=torch.bool)
    bad[[2, 17]] = True
    assert not torch.isfinite(out[bad]).any() and torch.isfinite(out[~bad]).all()


@pytest.mark.parametrize("isa", _native.supported_cpu_isas())
@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_1, Q.Q5_0, Q.Q4_K, Q.Q6_K], ids=lambda q: q.name)
def test_every_cpu_isa(isa, qtype):
    # Each built module (AVX2 vpmaddwd, AVX-512BW vpmaddwd, AVX512-VNNI vpdpwssd), called directly:
    # 33 rows = 2 AVX-512 vectors and one row (an odd vector on AVX2), 35 weight rows (odd panels).
    k = k_for(qtype)
    qw = random_qweight(qtype, 35, k, seed=8)
    x, bias = randn(33, k, device="cpu"), randn(35, device="cpu")
    for mode in INT_MODES:
        out = poisoned_like(torch.empty(33, 35))
        _native.cpu_module(isa).quantized_linear(view(out), view(x), view(qw.data), qw.qtype, view(bias),
                                                 ql.INPUT_MODES[mode])
        assert_mode_result(out, x, qw, bias, mode, torch.float32, ATTENTION_TOLERANCES)
