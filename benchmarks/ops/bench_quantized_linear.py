"""quantized_linear at decode shapes: our GGUF-block kernels in each input mode (``none`` exact,
``int16`` the default, ``int8``) vs torch's F.linear on the dense bf16 / fp32 weight vs the
reference (gguf dequantize + matmul per call).

Decode is memory-bound: a step reads every weight byte once, so GB/s is the bytes a backend's
weight occupies (quantized blocks for ours, 2 or 4 bytes per element for torch) over time; the
``record`` fixture sets it against the machine's copy bandwidth. One group per shape: the
baseline is torch's bf16 F.linear (the report's speed-up column). ``test_batched``: 8 to 512 rows
(batch decode, prompts; compute-bound), the integer GEMM against dequantized tiles + torch's matmul.
"""

import importlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q

from inference_pio import ops
from inference_pio.quant import QuantizedTensor

ql = importlib.import_module("inference_pio.ops.quantized_linear")

# (M, K, N): SmolLM2-135M's projections (o_proj, one of k/v, gate/up/down-sized, the 49152-token
# lm_head) and a TinyLlama-1.1B gate/up-sized one, at batch 1.
SHAPES = [(1, 576, 576), (1, 576, 192), (1, 576, 1536), (1, 576, 49152), (1, 2048, 5632)]
QTYPES = (Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q4_K, Q.Q5_K, Q.Q6_K)  # the K-quants at K % 256 == 0 only
MODES = ("none", "int16", "int8")
# fp16 scale fields (byte offsets) per type; every other byte pattern is a legal value.
SCALE_FIELDS = {Q.Q4_1: (0, 2), Q.Q5_1: (0, 2), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}
# The reference dequantizes the whole matrix per call (seconds for the lm_head): smaller shapes only.
REFERENCE_MAX_ELEMENTS = 2048 * 5632


def _label(shape):
    m, k, n = shape
    return f"[{m}, {k}] x [{n}, {k}]"


def random_blocks(qtype, n: int, k: int) -> QuantizedTensor:
    """Random blocks with finite fp16 scales (any other bit pattern is a legal value): quick to
    make at lm_head size, unlike quantizing a float matrix."""
    block, size = GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, size=(n * k // block, size), dtype=np.uint8)
    for offset in SCALE_FIELDS.get(qtype, (0,)):
        blocks[:, offset:offset + 2] = (rng.uniform(0.5, 1.0, blocks.shape[0]) * 0.01).astype(np.float16) \
            .view(np.uint8).reshape(-1, 2)
    return QuantizedTensor(torch.from_numpy(blocks.reshape(n, -1)), qtype, (n, k))


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}x{s[2]}")
@pytest.mark.parametrize("backend", [*(f"inference_pio.cpu_{mode}" for mode in MODES), "reference"])
def test_quantized_linear(benchmark, record, backend, shape, qtype):
    m, k, n = shape
    if k % GGML_QUANT_SIZES[qtype][0]:
        pytest.skip(f"K = {k} is not a multiple of {qtype.name}'s block")
    if backend == "reference" and n * k > REFERENCE_MAX_ELEMENTS:
        pytest.skip("the reference dequantizes the whole lm_head per call")
    benchmark.group = f"quantized_linear {_label(shape)}"
    qw = random_blocks(qtype, n, k)
    x = torch.randn(m, k)
    out = torch.empty(m, n)
    if backend == "reference":
        benchmark(ops.quantized_linear_reference, x, qw)
    else:
        benchmark(ops.quantized_linear, x, qw, out=out, quantize_input=backend.rpartition("_")[2])
    record(backend=f"{backend} {qw.qtype_name}", shape=_label(shape), bytes_moved=qw.nbytes + 4 * m * (k + n),
           flops=2 * m * n * k)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}x{s[2]}")
def test_dense_torch(benchmark, record, shape, dtype):
    m, k, n = shape
    benchmark.group = f"quantized_linear {_label(shape)}"
    x = torch.randn(m, k).to(dtype)
    w = torch.randn(n, k).to(dtype)
    benchmark(F.linear, x, w)
    name = "bf16" if dtype == torch.bfloat16 else "fp32"
    record(backend=f"torch_F.linear_{name}_dense", shape=_label(shape),
           bytes_moved=(n * k + m * (k + n)) * x.element_size(), flops=2 * m * n * k)


# Batches (decode of several sequences) and prompts are compute-bound. At these M: the integer GEMM
# (the C++ kernel from 10 rows, quantized_gemm.h; int16 and int8 inputs), the route the op took above
# 16 rows before it (weight tiles dequantized to x's dtype + torch's matmul, ``through_tiles``), and
# torch's dense bf16 F.linear. SmolLM2's gate/up and down shapes and TinyLlama-1.1B's gate/up.
BATCH_ROWS = (8, 32, 128, 512)
BATCH_SHAPES = [(576, 1536), (1536, 576), (2048, 5632)]
BATCH_QTYPES = (Q.Q4_0, Q.Q4_K)
BATCH_BACKENDS = ("inference_pio.cpu_int16", "inference_pio.cpu_int8", "through_tiles", "torch_F.linear_bf16_dense")


@pytest.mark.parametrize("qtype", BATCH_QTYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("m", BATCH_ROWS, ids=lambda m: f"M{m}")
@pytest.mark.parametrize("kn", BATCH_SHAPES, ids=lambda s: f"K{s[0]}xN{s[1]}")
@pytest.mark.parametrize("backend", BATCH_BACKENDS)
def test_batched(benchmark, record, backend, kn, m, qtype):
    k, n = kn
    if k % GGML_QUANT_SIZES[qtype][0]:
        pytest.skip(f"K = {k} is not a multiple of {qtype.name}'s block")
    if backend.startswith("torch") and qtype != BATCH_QTYPES[0]:
        pytest.skip("the dense baseline does not depend on the type")
    shape = (m, k, n)
    benchmark.group = f"quantized_linear batched {_label(shape)}"
    x = torch.randn(m, k)
    out = torch.empty(m, n)
    qw = random_blocks(qtype, n, k)
    if backend.startswith("torch"):
        xb = x.to(torch.bfloat16)
        benchmark(F.linear, xb, torch.randn(n, k).to(torch.bfloat16))
        name = backend
    elif backend == "through_tiles":
        benchmark(ql.quantized_linear_through_tiles, x, qw, None, out)
        name = f"{backend} {qw.qtype_name}"
    else:
        def kernel():
            with ops.use_backend("cpu"):  # the kernel at every M, whatever the op's routing
                ops.quantized_linear(x, qw, out=out, quantize_input=backend.rpartition("_")[2])
        benchmark(kernel)
        name = f"{backend} {qw.qtype_name}"
    record(backend=name, shape=_label(shape), flops=2 * m * n * k)
