"""Our DeepSeek plugin against transformers on the same random weights (float32 and bfloat16)."""

from __future__ import annotations

import pytest
import torch

from inference_pio.engine.generate import greedy
from inference_pio.plugins.deepseek import DeepSeek_Plugin
from tests.llama.checkpoints import hf_greedy, teacher_forced_logits, write_checkpoint

from .checkpoints import YARN, hf_deepseek

BLOCK = 16
BF16_TOL = dict(rtol=0.05, atol=0.25)  # bf16 keeps 8 mantissa bits; logits here are O(1-10)


def load_plugin(folder, dtype="float32", **kw) -> DeepSeek_Plugin:
    plugin = DeepSeek_Plugin()
    plugin.load(model_path=folder, dtype=dtype, kv_block_size=BLOCK, max_seq_len=256, max_batch_size=4, **kw)
    return plugin


# Each names what it covers beyond the fixtures' V2 / V3 (dense first layer, then MoE layers, everywhere).
CONFIGS = {
    # q LoRA on V2, group-limited greedy, YaRN (attention factor != 1 and an mscale_all_dim softmax scale).
    "v2_qlora_group_limited_yarn": (2, dict(q_lora_rank=24, topk_method="group_limited_greedy", n_group=4,
                                            topk_group=2, routed_scaling_factor=1.5, rope_parameters=YARN)),
    # A 44-dim latent row (rope 8 + 36) that the kernels do not take: the torch attention path.
    # Also biases on the attention projections and MLPs, two shared experts, top-3.
    "v2_torch_attention_biases": (2, dict(qk_rope_head_dim=8, kv_lora_rank=36, attention_bias=True, mlp_bias=True,
                                          n_shared_experts=2, num_experts_per_tok=3)),
    # V3 without q LoRA, NeoX rope layout (rope_interleave false), no renormalization, 2 dense layers.
    "v3_no_qlora_neox_rope": (3, dict(q_lora_rank=None, rope_interleave=False, norm_topk_prob=False,
                                      first_k_dense_replace=2, num_hidden_layers=4, n_group=2, topk_group=1)),
}


def assert_teacher_forced_parity(hf, plugin, seed: int, chunk: int | None = None) -> None:
    torch.manual_seed(seed)
    tokens = torch.randint(1, 512, (70,)).tolist()  # 40-token prompt spans 3 KV blocks, then 30 decode steps
    with torch.no_grad():
        expected = hf(torch.tensor([tokens])).logits[0]
    ours = teacher_forced_logits(plugin, tokens, prompt_len=40, chunk=chunk)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


def test_v2_float32_logits_match_prefill_and_every_decode_step(v2_checkpoint):
    hf, folder = v2_checkpoint
    assert_teacher_forced_parity(hf, load_plugin(folder), seed=1)


def test_v3_float32_logits_match_prefill_and_every_decode_step(v3_checkpoint):
    hf, folder = v3_checkpoint
    assert_teacher_forced_parity(hf, load_plugin(folder), seed=2)


def test_chunked_prefill_matches(v3_checkpoint):
    """Prompt chunks of 16 attend to the latent rows earlier chunks cached."""
    hf, folder = v3_checkpoint
    assert_teacher_forced_parity(hf, load_plugin(folder), seed=3, chunk=16)


@pytest.mark.parametrize("name", CONFIGS)
def test_float32_logits_match_variants(tmp_path, name):
    version, overrides = CONFIGS[name]
    hf = hf_deepseek(version, **overrides)
    plugin = load_plugin(write_checkpoint(tmp_path, hf, tokenizer=False))
    layer = plugin.model.layers[-1]
    assert layer.self_attn.use_kernels == (name != "v2_torch_attention_biases")
    assert type(layer.mlp).__name__ == "MixtureOfExperts"
    assert_teacher_forced_parity(hf, plugin, seed=4)


@pytest.mark.parametrize("fixture", ["v2_checkpoint", "v3_checkpoint"])
def test_greedy_continuation_identical_for_64_tokens(request, fixture):
    hf, folder = request.getfixturevalue(fixture)
    plugin = load_plugin(folder)
    prompt = list(range(5, 41))  # 36 tokens: 3 blocks
    [seq] = plugin.engine.generate([prompt], greedy(64, ignore_eos=True))
    assert seq.output_token_ids == hf_greedy(hf, prompt, 64)
    assert seq.finish_reason == "length"


@pytest.mark.parametrize("prefill_budget", [512, 16])
def test_batch_of_two_lengths_matches_each_alone(v3_checkpoint, prefill_budget):
    """43 and 17 tokens: prefilled together (or in 16-token chunks beside the other's decode), then batched decode."""
    hf, folder = v3_checkpoint
    plugin = load_plugin(folder, prefill_budget=prefill_budget)
    prompts = [list(range(7, 50)), list(range(100, 117))]
    seqs = plugin.engine.generate(prompts, greedy(24, ignore_eos=True))
    assert [s.output_token_ids for s in seqs] == [hf_greedy(hf, p, 24) for p in prompts]


@pytest.mark.parametrize("fixture", ["v2_checkpoint", "v3_checkpoint"])
def test_bfloat16_logits_within_tolerance(request, fixture):
    from transformers import AutoModelForCausalLM

    hf, folder = request.getfixturevalue(fixture)
    plugin = load_plugin(folder, dtype="bfloat16")
    assert plugin.model.layers[-1].mlp.gate.weight.dtype == torch.float32  # the router stays float32
    torch.manual_seed(5)
    tokens = torch.randint(1, 512, (40,)).tolist()
    hf_bf16 = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        expected = hf_bf16(torch.tensor([tokens])).logits[0].float()
        exact = hf(torch.tensor([tokens])).logits[0]
    ours = teacher_forced_logits(plugin, tokens, prompt_len=24)
    # bf16 rounding can flip a near-tie in expert routing (in either implementation), which moves
    # that token's whole row: most rows must match transformers' bf16 model, and on average our
    # error against the float32 model is no worse than transformers' own bf16 error.
    close = torch.isclose(ours, expected, **BF16_TOL).all(dim=-1)
    assert close.float().mean() >= 0.9, f"rows not within bf16 tolerance: {(~close).nonzero().flatten().tolist()}"
    assert (ours - exact).abs().mean() <= 1.25 * (expected - exact).abs().mean()
