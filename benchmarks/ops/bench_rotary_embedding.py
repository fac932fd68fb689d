"""rotary_embedding: our CPU kernel vs the reference vs transformers' eager apply_rotary_pos_emb.

Llama-3-8B-like heads: 32 query heads, 8 kv heads, head_dim 128, full rotary, NeoX layout
(plus our GPT-J path); cos/sin cache in the query dtype, as vLLM keeps it.
"""

import pytest
import torch

from inference_pio.ops import _dispatch, use_backend
from inference_pio.ops.rope_cache import build_cos_sin_cache
from inference_pio.ops.rotary_embedding import rotary_embedding

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, MAX_POSITION = 32, 8, 128, 4096
TOKENS = [1, 512, 2048]  # decode, prefill


def rotate_half(x):
    """transformers' rotate_half (models/llama/modeling_llama.py)."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def transformers_rotary(positions, q, k, cos_table, sin_table):
    """apply_rotary_pos_emb as transformers writes it, with cos/sin gathered by position
    (tables [max_position, head_dim], the half-size angles repeated twice as transformers does)."""
    cos = cos_table[positions].unsqueeze(1)
    sin = sin_table[positions].unsqueeze(1)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


def _ours(is_neox):
    def run(positions, q, k, cache, cos_table, sin_table):
        rotary_embedding(positions, q, k, HEAD_DIM, cache, is_neox)

    return run


def _cpu_direct(positions, q, k, cache, cos_table, sin_table):
    """The CPU backend without the op's validation and dispatch: what an engine hot path pays."""
    _dispatch.op("rotary_embedding").implementation("cpu")(positions, q, k, cache, True)


def _reference(positions, q, k, cache, cos_table, sin_table):
    with use_backend("reference"):
        rotary_embedding(positions, q, k, HEAD_DIM, cache, True)


BACKENDS = {
    "inference_pio.cpu": _ours(True),
    "inference_pio.cpu.gptj": _ours(False),
    "inference_pio.cpu.direct": _cpu_direct,
    "reference": _reference,
    "torch_eager_transformers": lambda positions, q, k, cache, cos_t, sin_t: transformers_rotary(positions, q, k, cos_t, sin_t),
}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("tokens", TOKENS, ids=lambda t: f"{t}tok")
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_rotary_embedding(benchmark, record, backend, tokens, dtype):
    benchmark.group = f"rotary_embedding {tokens}x{NUM_HEADS}/{NUM_KV_HEADS}x{HEAD_DIM} {str(dtype).removeprefix('torch.')}"
    positions = torch.randint(0, MAX_POSITION, (tokens,))
    q = torch.randn(tokens, NUM_HEADS, HEAD_DIM).to(dtype)
    k = torch.randn(tokens, NUM_KV_HEADS, HEAD_DIM).to(dtype)
    cache = build_cos_sin_cache(HEAD_DIM, MAX_POSITION, dtype=dtype)
    half = HEAD_DIM // 2
    cos_table = cache[:, :half].repeat(1, 2)
    sin_table = cache[:, half:].repeat(1, 2)
    benchmark(BACKENDS[backend], positions, q, k, cache, cos_table, sin_table)
    # The least traffic any implementation needs: q and k read and written, one cache row and
    # one position per token.
    moved = 2 * (q.numel() + k.numel()) * q.element_size() + tokens * (HEAD_DIM * cache.element_size() + 8)
    record(backend=backend, shape=f"{tokens}x{NUM_HEADS}/{NUM_KV_HEADS}x{HEAD_DIM}", bytes_moved=moved)
