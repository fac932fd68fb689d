"""rms_norm / fused_add_rms_norm: our CPU kernel vs the reference vs transformers' eager code."""

import pytest
import torch

from inference_pio import ops

# (tokens, hidden): decode (1 token) and prefill (512, 2048 tokens).
SHAPES = [(1, 2048), (1, 4096), (512, 2048), (512, 4096), (2048, 4096)]


def transformers_rms_norm(x, weight, eps):
    """LlamaRMSNorm.forward as transformers writes it."""
    input_dtype = x.dtype
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(input_dtype)


BACKENDS = {
    "inference_pio.cpu": lambda x, w, out: ops.rms_norm(x, w, 1e-6, out=out),
    "reference": lambda x, w, out: ops.rms_norm_reference(x, w, 1e-6),
    "torch_eager_transformers": lambda x, w, out: transformers_rms_norm(x, w, 1e-6),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_rms_norm(benchmark, record, backend, shape, dtype):
    tokens, hidden = shape
    benchmark.group = f"rms_norm {tokens}x{hidden} {str(dtype).removeprefix('torch.')}"
    x = torch.randn(tokens, hidden, dtype=dtype)
    w = torch.randn(hidden, dtype=dtype)
    out = torch.empty_like(x)
    fn = BACKENDS[backend]
    benchmark(fn, x, w, out)
    record(backend=backend, shape=f"{tokens}x{hidden}", bytes_moved=2 * x.numel() * x.element_size() + w.numel() * w.element_size())


def transformers_add_rms_norm(x, residual, weight, eps):
    """The unfused decoder-layer code: residual add, then LlamaRMSNorm."""
    residual = residual + x
    return transformers_rms_norm(residual, weight, eps), residual


FUSED_BACKENDS = {
    "inference_pio.cpu": lambda x, r, w: ops.fused_add_rms_norm(x, r, w, 1e-6),
    "reference": lambda x, r, w: ops.fused_add_rms_norm_reference(x, r, w, 1e-6),
    "torch_eager_transformers": lambda x, r, w: transformers_add_rms_norm(x, r, w, 1e-6),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("backend", list(FUSED_BACKENDS))
def test_fused_add_rms_norm(benchmark, record, backend, shape, dtype):
    tokens, hidden = shape
    benchmark.group = f"fused_add_rms_norm {tokens}x{hidden} {str(dtype).removeprefix('torch.')}"
    x = torch.randn(tokens, hidden, dtype=dtype)
    residual = torch.randn(tokens, hidden, dtype=dtype)
    w = torch.randn(hidden, dtype=dtype)
    # In place on x and residual: values drift across rounds but stay finite (normalized every call).
    benchmark(FUSED_BACKENDS[backend], x, residual, w)
    # Reads x and residual, writes both.
    record(backend=backend, shape=f"{tokens}x{hidden}", bytes_moved=4 * x.numel() * x.element_size() + w.numel() * w.element_size())
