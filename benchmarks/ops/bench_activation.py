"""silu_and_mul / gelu_and_mul: our CPU kernel vs the reference vs transformers' eager code.

Input is a fused gate+up projection output [tokens, 2 * intermediate]. Ours writes into a
preallocated ``out`` (as the engine does); the eager versions allocate, as they do in a model.
"""

import pytest
import torch
import torch.nn.functional as F

from inference_pio.ops import activation

TOKENS = [1, 512, 2048]  # decode, prefill chunks
INTERMEDIATE = [5632, 11008, 14336]  # TinyLlama, Llama-2-7B, Llama-3-8B / Mistral-7B
# GeGLU (Gemma) on one width keeps the run short; the erf and tanh paths differ only in math.
CASES = [("silu", i) for i in INTERMEDIATE] + [("gelu", 11008), ("gelu_tanh", 11008)]


def transformers_gated(act: str, x: torch.Tensor) -> torch.Tensor:
    """transformers' eager gated MLP activation on a fused gate_up output (Phi-3 style chunk)."""
    gate, up = x.chunk(2, dim=-1)
    if act == "silu":
        return F.silu(gate) * up  # LlamaMLP: act_fn(gate_proj(x)) * up_proj(x)
    return F.gelu(gate, approximate="tanh" if act == "gelu_tanh" else "none") * up


def ours(act: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    if act == "silu":
        return activation.silu_and_mul(x, out=out)
    return activation.gelu_and_mul(x, "tanh" if act == "gelu_tanh" else "none", out=out)


def reference(act: str, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    if act == "silu":
        return activation.silu_and_mul_reference(x)
    return activation.gelu_and_mul_reference(x, "tanh" if act == "gelu_tanh" else "none")


BACKENDS = {
    "inference_pio.cpu": ours,
    "reference": reference,
    "torch_eager_transformers": lambda act, x, out: transformers_gated(act, x),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("tokens", TOKENS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}")
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_gated_activation(benchmark, record, backend, case, tokens, dtype):
    act, intermediate = case
    shape = f"{tokens}x{2 * intermediate}"
    benchmark.group = f"{act}_and_mul {shape} {str(dtype).removeprefix('torch.')}"
    x = torch.randn(tokens, 2 * intermediate, dtype=dtype)
    out = torch.empty(tokens, intermediate, dtype=dtype)
    benchmark(BACKENDS[backend], act, x, out)
    # Read gate and up once, write out once.
    record(backend=backend, shape=shape, bytes_moved=3 * tokens * intermediate * x.element_size())
