"""paged_decode_attention: our CPU kernel over a paged cache (shuffled blocks) vs the reference vs
transformers' eager path (repeat_kv + scaled_dot_product_attention on K/V already gathered into
contiguous [batch, kv_heads, ctx, head_dim] tensors; the gather is not timed, repeat_kv is).
Also reshape_and_cache (decode and prefill writes) vs the reference.

bytes = the K and V bytes a decode step must read: 2 * batch * ctx * kv_heads * head_dim * size.
"""

import pytest
import torch
import torch.nn.functional as F

from inference_pio.ops.kv_cache import reshape_and_cache, reshape_and_cache_reference
from inference_pio.ops.paged_decode_attention import paged_decode_attention, paged_decode_attention_reference

NUM_HEADS, NUM_KV_HEADS, HEAD_DIM, BLOCK_SIZE = 32, 8, 128, 16
CONTEXTS = [512, 2048, 8192]
BATCHES = [1, 8]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """transformers' repeat_kv: [b, kv_heads, s, d] -> [b, kv_heads * n_rep, s, d]."""
    b, kv, s, d = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None].expand(b, kv, n_rep, s, d).reshape(b, kv * n_rep, s, d)


def paged_problem(batch, ctx, dtype):
    blocks_per_seq = ctx // BLOCK_SIZE
    num_blocks = batch * blocks_per_seq
    shape = (num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM)
    key_cache, value_cache = torch.randn(shape).to(dtype), torch.randn(shape).to(dtype)
    block_tables = torch.randperm(num_blocks, dtype=torch.int32).view(batch, blocks_per_seq)
    context_lens = torch.full((batch,), ctx, dtype=torch.int32)
    query = torch.randn(batch, NUM_HEADS, HEAD_DIM).to(dtype)
    return query, key_cache, value_cache, block_tables, context_lens


def dense_kv(key_cache, block_tables):
    """[batch, kv_heads, ctx, head_dim] gathered through the block tables (not timed)."""
    batch = block_tables.shape[0]
    return key_cache[block_tables.long()].reshape(batch, -1, NUM_KV_HEADS, HEAD_DIM).transpose(1, 2).contiguous()


def run_ours(q, kc, vc, bt, cl, out):
    return lambda: paged_decode_attention(q, kc, vc, bt, cl, max_context_len=int(cl.max()), out=out)


def run_reference(q, kc, vc, bt, cl, out):
    return lambda: paged_decode_attention_reference(q, kc, vc, bt, cl)


def run_sdpa_transformers(q, kc, vc, bt, cl, out):
    k, v = dense_kv(kc, bt), dense_kv(vc, bt)
    q4 = q[:, :, None]
    n_rep = NUM_HEADS // NUM_KV_HEADS
    return lambda: F.scaled_dot_product_attention(q4, repeat_kv(k, n_rep), repeat_kv(v, n_rep))


def run_sdpa_gqa(q, kc, vc, bt, cl, out):
    k, v = dense_kv(kc, bt), dense_kv(vc, bt)
    q4 = q[:, :, None]
    return lambda: F.scaled_dot_product_attention(q4, k, v, enable_gqa=True)


BACKENDS = {
    "inference_pio.cpu": run_ours,
    "reference": run_reference,
    "torch_sdpa_transformers": run_sdpa_transformers,
    "torch_sdpa_enable_gqa": run_sdpa_gqa,
}


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("batch", BATCHES, ids=lambda b: f"batch{b}")
@pytest.mark.parametrize("ctx", CONTEXTS, ids=lambda c: f"ctx{c}")
@pytest.mark.parametrize("backend", list(BACKENDS))
def test_paged_decode_attention(benchmark, record, backend, ctx, batch, dtype):
    benchmark.group = f"paged_decode_attention batch{batch} ctx{ctx} {dtype} h{NUM_HEADS}/kv{NUM_KV_HEADS} d{HEAD_DIM}"
    q, kc, vc, bt, cl = paged_problem(batch, ctx, DTYPES[dtype])
    fn = BACKENDS[backend](q, kc, vc, bt, cl, torch.empty_like(q))
    benchmark(fn)
    kv_bytes = 2 * batch * ctx * NUM_KV_HEADS * HEAD_DIM * kc.element_size()
    record(backend=backend, shape=f"{batch}x{ctx}", bytes_moved=kv_bytes, flops=4 * batch * ctx * NUM_HEADS * HEAD_DIM)


WRITE_BACKENDS = {"inference_pio.cpu": reshape_and_cache, "reference": reshape_and_cache_reference}


@pytest.mark.parametrize("tokens", [8, 2048], ids=lambda t: f"tokens{t}")
@pytest.mark.parametrize("backend", list(WRITE_BACKENDS))
def test_reshape_and_cache(benchmark, record, backend, tokens):
    benchmark.group = f"reshape_and_cache tokens{tokens} bf16 kv{NUM_KV_HEADS} d{HEAD_DIM}"
    num_blocks = 4 * (tokens + BLOCK_SIZE - 1) // BLOCK_SIZE
    shape = (num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_DIM)
    key_cache, value_cache = torch.zeros(shape, dtype=torch.bfloat16), torch.zeros(shape, dtype=torch.bfloat16)
    key, value = (torch.randn(tokens, NUM_KV_HEADS, HEAD_DIM).to(torch.bfloat16) for _ in range(2))
    slots = torch.randperm(num_blocks * BLOCK_SIZE)[:tokens]
    benchmark(WRITE_BACKENDS[backend], key, value, key_cache, value_cache, slots)
    record(backend=backend, shape=f"{tokens}", bytes_moved=2 * 2 * key.numel() * key.element_size())
