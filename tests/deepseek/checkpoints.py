"""Tiny random-weight DeepSeek-V2 / V3 checkpoints written by transformers, for parity tests.

Weights are redrawn with a larger std than transformers' 0.02 (as in ``tests.llama.checkpoints``)
so logits and router scores are well separated: greedy and routing comparisons then test the
model, not floating-point tie breaking. V3's ``e_score_correction_bias`` (zeros at init) is drawn too.
"""

from __future__ import annotations

import torch

# latent row = rope 16 + kv_lora_rank 32 = 48 dims: the attention kernels' path.
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=96, moe_intermediate_size=32, num_hidden_layers=3,
            num_attention_heads=4, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=12,
            n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
            max_position_embeddings=256, bos_token_id=3, eos_token_id=0)
V2 = dict(q_lora_rank=None, topk_method="greedy")
V3 = dict(q_lora_rank=24, n_group=4, topk_group=2, norm_topk_prob=True, routed_scaling_factor=2.5,
          num_key_value_heads=4)  # transformers' V3 default (128 kv heads) would break its own tiny model
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 64,
        "mscale": 1.0, "mscale_all_dim": 0.8, "beta_fast": 32, "beta_slow": 1}


def hf_deepseek(version: int = 2, seed: int = 0, **overrides):
    """A seeded transformers ``DeepseekV2ForCausalLM`` / ``DeepseekV3ForCausalLM`` (float32, eval mode)."""
    import transformers

    name = f"DeepseekV{version}"
    kwargs = {**TINY, **(V2 if version == 2 else V3), **overrides}
    torch.manual_seed(seed)
    model = getattr(transformers, f"{name}ForCausalLM")(getattr(transformers, f"{name}Config")(**kwargs)).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.uniform_(0.8, 1.2)
            else:
                p.normal_(0.0, 0.15)
        for bname, b in model.named_buffers():
            if bname.endswith("e_score_correction_bias"):
                b.normal_(0.0, 0.1)
    return model
