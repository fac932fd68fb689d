"""The plugin's own pieces on their own: expert routing against transformers' routers, and the
attention over the paged latent (kernel path, torch path, the ops' reference)."""

from __future__ import annotations

import pytest
import torch

from inference_pio.engine.latent_kv_cache import LatentKVCache
from inference_pio.ops import _dispatch
from inference_pio.ops.prefill_attention import prefill_attention_reference
from inference_pio.plugins.deepseek import DeepSeekConfig
from inference_pio.plugins.deepseek.attention import latent_attention_torch, paged_latent_attention
from inference_pio.plugins.deepseek.attention.paged_latent_attention import write_latent
from inference_pio.plugins.deepseek.mlp import TopKRouter

from .checkpoints import TINY

ROUTINGS = {
    "v2_greedy": (2, dict(topk_method="greedy", num_experts_per_tok=3)),
    "v2_group_limited": (2, dict(topk_method="group_limited_greedy", n_group=4, topk_group=2, routed_scaling_factor=1.7)),
    "v3_groups_normalized": (3, dict(n_group=4, topk_group=2, norm_topk_prob=True, routed_scaling_factor=2.5)),
    "v3_one_group_unnormalized": (3, dict(n_group=1, topk_group=1, norm_topk_prob=False, num_experts_per_tok=4)),
}


@pytest.mark.parametrize("name", ROUTINGS)
def test_router_matches_transformers(name):
    import importlib

    import transformers

    version, overrides = ROUTINGS[name]
    kwargs = {**TINY, "n_routed_experts": 16, **overrides}
    hf_cfg = getattr(transformers, f"DeepseekV{version}Config")(**kwargs)
    module = importlib.import_module(f"transformers.models.deepseek_v{version}.modeling_deepseek_v{version}")
    hf_router = getattr(module, f"DeepseekV{version}TopkRouter")(hf_cfg)
    ours = TopKRouter(DeepSeekConfig.from_pretrained_config({**kwargs, "model_type": f"deepseek_v{version}"}))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        hf_router.weight.copy_(torch.randn(hf_router.weight.shape, generator=gen))
        ours.weight.copy_(hf_router.weight)
        if version == 3:
            hf_router.e_score_correction_bias.copy_(torch.randn(16, generator=gen) * 0.3)
            ours.e_score_correction_bias.copy_(hf_router.e_score_correction_bias)
        x = torch.randn(37, TINY["hidden_size"], generator=gen)
        _, hf_weights, hf_ids = hf_router(x)
    weights, ids = ours(x)
    # Same experts with the same weights (top-k order is unspecified: compare sorted by expert id).
    hf_order, order = hf_ids.sort(-1), ids.sort(-1)
    assert torch.equal(order.values, hf_order.values)
    torch.testing.assert_close(weights.gather(1, order.indices), hf_weights.gather(1, hf_order.indices))
    if version == 3:  # the bias steers the choice: without it other experts win for some tokens
        ours.e_score_correction_bias.zero_()
        assert not torch.equal(ours(x)[1].sort(-1).values, order.values)


def _filled_cache(lens, dim, block, dtype, gen):
    """A latent cache holding random rows for sequences of ``lens`` tokens (blocks shuffled)."""
    cache = LatentKVCache(1, 1, dim, num_blocks=sum(-(-n // block) for n in lens) + 3, block_size=block, dtype=dtype)
    cache.allocator._free.reverse()  # hand out blocks from the far end: tables are not 0, 1, 2...
    for i, n in enumerate(lens):
        cache.allocate(i, n)
    meta = cache.build_metadata(list(range(len(lens))), lens)
    write_latent(torch.randn(sum(lens), 1, dim, generator=gen).to(dtype), cache.key_caches[0], meta)
    return cache


_TRITON = _dispatch.backend_runs_on("triton", torch.device("cpu"))  # None where it runs (TRITON_INTERPRET=1)


@pytest.mark.parametrize("dim,use_kernels,backend", [
    (48, True, None), (48, False, None), (44, False, None),
    pytest.param(48, True, "triton", marks=pytest.mark.skipif(_TRITON is not None, reason=str(_TRITON))),
])
@pytest.mark.parametrize("step", ["prefill", "chunk", "decode"])
def test_paged_latent_attention_matches_reference(dim, use_kernels, backend, step):
    """The cache passed as its own value cache works on every kernel (and on the torch path)."""
    gen = torch.Generator().manual_seed(1)
    lens, block, heads, scale = [37, 5, 18], 16, 4, 0.3
    cache = _filled_cache(lens, dim, block, torch.float32, gen)
    query_lens = {"prefill": lens, "chunk": [12, 5, 1], "decode": [1, 1, 1]}[step]
    meta = cache.build_metadata(list(range(len(lens))), query_lens)
    query = torch.randn(sum(query_lens), heads, dim, generator=gen)
    out = torch.full_like(query, float("nan"))
    with _dispatch.use_backend(backend):
        paged_latent_attention(query, cache.key_caches[0], meta, scale, out, use_kernels)
    c = cache.key_caches[0]
    expected = prefill_attention_reference(query, c, c, meta.cu_seqlens_q, meta.cu_seqlens_k, True, scale,
                                           block_tables=meta.block_tables)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_torch_path_in_bfloat16_accumulates_in_float32():
    gen = torch.Generator().manual_seed(2)
    cache = _filled_cache([40], 576, 16, torch.bfloat16, gen)  # DeepSeek-V2/V3's real row width
    meta = cache.build_metadata([0], [1])
    query = torch.randn(1, 16, 576, generator=gen).to(torch.bfloat16)
    out = torch.full_like(query, float("nan"))
    latent_attention_torch(query, cache.key_caches[0], meta, 0.1, out)
    c = cache.key_caches[0]
    expected = prefill_attention_reference(query, c, c, meta.cu_seqlens_q, meta.cu_seqlens_k, True, 0.1,
                                           block_tables=meta.block_tables)
    torch.testing.assert_close(out.float(), expected.float(), rtol=1e-2, atol=1e-2)
