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
