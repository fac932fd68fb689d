"""prefill_attention: our CPU kernel vs the reference vs torch SDPA as transformers calls it."""

import pytest
import torch
import torch.nn.functional as F

from inference_pio import ops
from inference_pio.ops.prefill_attention import prefill_attention, prefill_attention_reference

HEAD_DIM = 128
# Packed batches: sequence lengths (all equal, so SDPA runs them as one padded-free batch).
SHAPES = {"1x512": [512], "1x2048": [2048], "4x512": [512] * 4}
HEADS = [(32, 8), (32, 32)]
REFERENCE_MAX_LEN = 512  # the reference materializes [heads, L, L] scores: gigabytes at 2048 tokens


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """transformers' repeat_kv: [batch, kv_heads, seq, dim] -> [batch, kv_heads * n_rep, seq, dim]."""
    b, kv_heads, s, d = x.shape
    return x if n_rep == 1 else x[:, :, None].expand(b, kv_heads, n_rep, s, d).reshape(b, kv_heads * n_rep, s, d)


def sdpa_transformers(q, k, v, lens, heads, kv_heads):
    """transformers' sdpa_attention_forward for equal-length sequences: [batch, heads, seq, dim], K/V repeated."""
    b, n = len(lens), lens[0]
    qq = q.view(b, n, heads, HEAD_DIM).transpose(1, 2)
    kk = repeat_kv(k.view(b, n, kv_heads, HEAD_DIM).transpose(1, 2), heads // kv_heads)
    vv = repeat_kv(v.view(b, n, kv_heads, HEAD_DIM).transpose(1, 2), heads // kv_heads)
    return F.scaled_dot_product_attention(qq, kk, vv, is_causal=True)


BACKENDS = {
    "inference_pio.cpu": lambda q, k, v, cu, lens, h, kvh, out: prefill_attention(q, k, v, cu, cu, True, out=out),
    "reference": lambda q, k, v, cu, lens, h, kvh, out: prefill_attention_reference(q, k, v, cu, cu, True),
    "torch_sdpa_transformers": lambda q, k, v, cu, lens, h, kvh, out: sdpa_transformers(q, k, v, lens, h, kvh),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("heads", HEADS, ids=lambda h: f"{h[0]}q{h[1]}kv")
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_prefill_attention(benchmark, record, backend, shape, heads, dtype):
    lens = SHAPES[shape]
    if backend == "reference" and max(lens) > REFERENCE_MAX_LEN:
        pytest.skip(f"the reference needs [heads, L, L] score tensors; skipped above {REFERENCE_MAX_LEN} tokens")
    num_heads, kv_heads = heads
    benchmark.group = f"prefill_attention {shape} {num_heads}q/{kv_heads}kv d{HEAD_DIM} {str(dtype).removeprefix('torch.')}"
    total = sum(lens)
    q = torch.randn(total, num_heads, HEAD_DIM).to(dtype)
    k = torch.randn(total, kv_heads, HEAD_DIM).to(dtype)
    v = torch.randn(total, kv_heads, HEAD_DIM).to(dtype)
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    out = torch.empty_like(q)
    with ops.use_backend("cpu" if backend == "inference_pio.cpu" else None):
        benchmark(BACKENDS[backend], q, k, v, cu, lens, num_heads, kv_heads, out)
    flops = sum(2 * 2 * num_heads * n * n * HEAD_DIM // 2 for n in lens)  # causal: half of QK^T and PV
    record(backend=backend, shape=f"{shape} {num_heads}/{kv_heads} d{HEAD_DIM}", flops=flops,
           bytes_moved=(2 * q.numel() + k.numel() + v.numel()) * q.element_size())
