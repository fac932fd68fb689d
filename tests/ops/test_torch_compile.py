"""The ops compose with torch.compile through their custom-op registrations (CPU)."""

import pytest
import torch

from inference_pio import ops


@pytest.mark.slow
def test_compiled_function_matches_eager():
    torch._dynamo.reset()

    def block(x, residual, w):
        ops.fused_add_rms_norm(x, residual, w, 1e-6)
        return ops.rms_norm(x * 2.0, w, 1e-6) + 1.0

    x, res, w = torch.randn(6, 64), torch.randn(6, 64), torch.randn(64)
    x2, res2 = x.clone(), res.clone()
    expected = block(x, res, w)
    compiled = torch.compile(block, fullgraph=True)
    got = compiled(x2, res2, w)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(res2, res)  # the in-place residual update survives compilation


@pytest.mark.slow
def test_compiled_attention_block_matches_eager():
    """rotary (in place) -> prefill attention -> gated MLP activation, under one compiled graph."""
    from inference_pio.ops.rope_cache import build_cos_sin_cache

    torch._dynamo.reset()
    cache = build_cos_sin_cache(32, 64, 10000.0)
    cu = torch.tensor([0, 5, 12], dtype=torch.int32)

    def block(positions, q, k, v, gate_up):
        ops.rotary_embedding(positions, q, k, 32, cache, True)
        attn = ops.prefill_attention(q.view(12, 4, 32), k.view(12, 2, 32), v, cu, cu, True)
        return attn.flatten(1)[:, :16] + ops.silu_and_mul(gate_up)

    positions = torch.cat([torch.arange(5), torch.arange(7)])
    q, k, v = torch.randn(12, 128), torch.randn(12, 64), torch.randn(12, 2, 32)
    gate_up = torch.randn(12, 32)
    expected = block(positions, q.clone(), k.clone(), v, gate_up)
    got = torch.compile(block, fullgraph=True)(positions, q.clone(), k.clone(), v, gate_up)
    torch.testing.assert_close(got, expected)
