"""linear: our CPU kernel vs torch F.linear vs the float32 reference, at decode shapes.

Decode is memory-bound: each step reads every weight once, so GB/s is weight bytes / time and
the bound is the machine's copy bandwidth (the ``record`` fixture reports the fraction).
Ours writes into a preallocated ``out`` (as layers.Linear does when given one); F.linear allocates.
"""

import pytest
import torch
import torch.nn.functional as F

from inference_pio import ops as lin  # ops.linear / ops.linear_reference

# (M, K, N): TinyLlama-1.1B gate_up/down-sized [5632, 2048] and attention-sized [2048, 2048]
# projections at batch 1, and a batch of 8 decode rows.
SHAPES = [(1, 2048, 5632), (1, 2048, 2048), (8, 2048, 5632)]

BACKENDS = {
    "inference_pio.cpu": lambda x, w, out: lin.linear(x, w, out=out),
    "torch_F.linear": lambda x, w, out: F.linear(x, w),
    "reference": lambda x, w, out: lin.linear_reference(x, w),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}x{s[2]}")
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_linear(benchmark, record, backend, shape, dtype):
    m, k, n = shape
    label = f"[{m}, {k}] x [{n}, {k}]"
    benchmark.group = f"linear {label} {str(dtype).removeprefix('torch.')}"
    x = torch.randn(m, k).to(dtype)
    w = (torch.randn(n, k) * k**-0.5).to(dtype)
    out = torch.empty(m, n, dtype=dtype)
    benchmark(BACKENDS[backend], x, w, out)
    # The weight dominates: x and out are M*(K+N) elements against N*K.
    record(backend=backend, shape=label, bytes_moved=(n * k + m * (k + n)) * x.element_size(), flops=2 * m * n * k)
