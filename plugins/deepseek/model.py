"""The DeepSeek-V2 / V3 decoder over a paged latent KV cache, assembled from ``inference_pio.layers``
and the plugin's ``attention/`` (MLA) and ``mlp/`` (mixture-of-experts).

``forward`` has the engine's signature (packed tokens of one step plus their ``AttentionMetadata``).
Checkpoint differences are settled at load: the hidden-state projections fused, ``kv_b_proj`` split into its key / value halves, expert
gate/up rows fused, the router kept in float32, multi-token-prediction layers skipped.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
import torch.nn as nn

from inference_pio.layers import GatedMLP, RMSNorm, RotaryEmbedding
from inference_pio.layers.decoder import DecoderModel
from inference_pio.layers.decoder_weights import adopt_state
from inference_pio.layers.step_context import StepContext
from inference_pio.weights import WeightLoadError, fuse_into, load_state, open_checkpoint

from .attention import MultiHeadLatentAttention, kernels_support
from .config import DeepSeekConfig
from .mlp import MixtureOfExperts

logger = logging.getLogger(__name__)

_LAYER = re.compile(r"^model\.layers\.(\d+)\.")
_ROUTER_SUFFIXES = (".mlp.gate.weight", ".mlp.gate.e_score_correction_bias")


class DeepSeekDecoderLayer(nn.Module):
    """Pre-norm block: latent attention, then a dense gated MLP or the mixture of experts."""

    def __init__(self, cfg: DeepSeekConfig, index: int, dtype: torch.dtype):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.self_attn = MultiHeadLatentAttention(cfg, dtype)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.mlp = (MixtureOfExperts(cfg, dtype) if cfg.is_moe_layer(index)
                    else GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias, dtype))

    def forward(self, h: torch.Tensor, residual: torch.Tensor, step: StepContext, index: int) -> torch.Tensor:
        """``h`` is the previous sub-block's output (added to ``residual`` in place); returns the new one."""
        x = self.input_layernorm(h, residual)
        h = self.self_attn(x, step, step.key_caches[index], out=h)
        x = self.post_attention_layernorm(h, residual)
        return self.mlp(x, out=h, workspace=step.workspace)


class DeepSeekModel(DecoderModel):
    """DeepSeek decoder + LM head on the shared decoder's skeleton (embedding, step loop, final norm,
    head, workspace) with its own layers. Parameters are named like the rearranged checkpoint
    (see ``adopt_hf_state``).

    ``forward`` has the engine's signature: ``key_caches[i]`` is layer ``i``'s latent cache
    ``[num_blocks, block_size, 1, R + L]`` (``engine.LatentKVCache``; ``value_caches`` is the same
    list and not read). The fused C++ decode step does not model latent attention: every step runs
    the per-op path.
    """

    fused_decode = False

    def __init__(self, cfg: DeepSeekConfig, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        super().__init__(cfg, dtype, device)
        if not kernels_support(cfg.latent_dim):
            logger.warning("DeepSeek latent rows of %d dims are outside what the attention kernels take (multiples "
                           "of 16 up to 256): attention runs in plain torch over the gathered latent", cfg.latent_dim)

    def build_layer(self, cfg: DeepSeekConfig, index: int, dtype: torch.dtype) -> nn.Module:
        return DeepSeekDecoderLayer(cfg, index, dtype)

    def build_rotary(self, cfg: DeepSeekConfig, device) -> RotaryEmbedding:
        # Rotates the first R dims of each absorbed query head and of each cached row.
        return RotaryEmbedding(cfg.latent_dim, cfg.qk_rope_head_dim, cfg.max_seq_len, cfg.rope_theta,
                               cfg.rope_scaling, cfg.max_position_embeddings, is_neox=cfg.rope_is_neox, device=device)

    # ----- weights -----

    def checkpoint_shapes(self) -> dict[str, tuple[int, ...]]:
        """The HF tensor names and shapes this model reads (before fusion)."""
        c = self.config
        h, hidden, lat = c.num_attention_heads, c.hidden_size, c.kv_lora_rank
        q_size = h * c.qk_head_dim
        shapes = {"model.embed_tokens.weight": (c.vocab_size, hidden), "model.norm.weight": (hidden,),
                  "lm_head.weight": (c.vocab_size, hidden)}
        attn = {"kv_a_proj_with_mqa": ((lat + c.qk_rope_head_dim, hidden), c.attention_bias),
                "kv_a_layernorm": ((lat,), False), "kv_b_proj": ((h * (c.qk_nope_head_dim + c.v_head_dim), lat), False),
                "o_proj": ((hidden, h * c.v_head_dim), c.attention_bias)}
        if c.q_lora_rank:
            attn.update(q_a_proj=((c.q_lora_rank, hidden), c.attention_bias), q_a_layernorm=((c.q_lora_rank,), False),
                        q_b_proj=((q_size, c.q_lora_rank), False))
        else:
            attn["q_proj"] = ((q_size, hidden), False)
        for i in range(c.num_hidden_layers):
            p = f"model.layers.{i}."
            shapes[p + "input_layernorm.weight"] = shapes[p + "post_attention_layernorm.weight"] = (hidden,)
            for name, (shape, bias) in attn.items():
                shapes[f"{p}self_attn.{name}.weight"] = shape
                if bias:
                    shapes[f"{p}self_attn.{name}.bias"] = shape[:1]
            if c.is_moe_layer(i):
                shapes[p + "mlp.gate.weight"] = (c.n_routed_experts, hidden)
                if c.is_v3:
                    shapes[p + "mlp.gate.e_score_correction_bias"] = (c.n_routed_experts,)
                for e in range(c.n_routed_experts):
                    shapes.update(_gated_mlp_shapes(f"{p}mlp.experts.{e}.", hidden, c.moe_intermediate_size, False))
                if c.n_shared_experts:
                    shapes.update(_gated_mlp_shapes(f"{p}mlp.shared_experts.", hidden,
                                                    c.moe_intermediate_size * c.n_shared_experts, c.mlp_bias))
            else:
                shapes.update(_gated_mlp_shapes(f"{p}mlp.", hidden, c.intermediate_size, c.mlp_bias))
        return shapes

    def load_weights(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        """Read the safetensors checkpoint at ``path`` (router tensors in float32, the rest in the
        model's dtype) and adopt it. Multi-token-prediction layers (indices past
        ``num_hidden_layers``, as in DeepSeek-V3) are not read.

        Raises ``WeightLoadError`` naming missing, unexpected or mis-shaped tensors.
        """
        c, dtype = self.config, self.compute_dtype
        expected = self.checkpoint_shapes()
        stored = open_checkpoint(path).shapes()
        unexpected = [n for n in stored if n not in expected and not _is_mtp_layer(n, c.num_hidden_layers)]
        if unexpected:
            raise WeightLoadError(f"{path}: checkpoint does not match the model; unexpected: {', '.join(unexpected)}")
        router = {n: s for n, s in expected.items() if n.endswith(_ROUTER_SUFFIXES)}
        rest = {n: s for n, s in expected.items() if n not in router}
        state = load_state(path, rest, dtype=dtype, strict=False, device=device,
                           tie_word_embeddings=c.tie_word_embeddings, floating=True)
        state.update(load_state(path, router, dtype=torch.float32, strict=False, device=device, floating=True))
        missing = [n for n in expected if n not in state]
        if missing:
            raise WeightLoadError(f"{path}: checkpoint does not match the model; missing: {', '.join(missing)}")
        self.adopt_hf_state(state, where=str(path))

    def adopt_hf_state(self, state: dict[str, torch.Tensor], where: str = "state dict") -> None:
        """Take tensors named like transformers' (``model.layers.0.self_attn.kv_b_proj.weight``...),
        already checked and in their dtypes; ``state`` is consumed. The attention and expert tensors
        are rearranged here."""
        c = self.config
        for i in range(c.num_hidden_layers):
            p = f"model.layers.{i}."
            self._adopt_attention(state, p + "self_attn.")
            if not c.is_moe_layer(i):
                _fuse_gate_up(state, f"{p}mlp.")
                continue
            for e in range(c.n_routed_experts):
                _fuse_gate_up(state, f"{p}mlp.experts.{e}.")
            if c.n_shared_experts:
                _fuse_gate_up(state, f"{p}mlp.shared_experts.")
        adopt_state(self, state, where)

    def _adopt_attention(self, state: dict[str, torch.Tensor], a: str) -> None:
        c = self.config
        lat, h = c.kv_lora_rank, c.num_attention_heads
        q_name = a + ("q_a_proj" if c.q_lora_rank else "q_proj")
        kv_name = a + "kv_a_proj_with_mqa"
        suffixes = ("weight", "bias") if c.attention_bias else ("weight",)
        for suffix in suffixes:
            kv = state[f"{kv_name}.{suffix}"]
            state[f"{kv_name}.{suffix}"] = torch.cat([kv[lat:], kv[:lat]])  # rope rows first, as cached
            if suffix == "bias" and not c.q_lora_rank:  # q_proj has no bias even with attention_bias
                state[f"{q_name}.bias"] = kv.new_zeros(h * c.qk_head_dim)
            fuse_into(state, [f"{q_name}.{suffix}", f"{kv_name}.{suffix}"], f"{a}qkv_a_proj.{suffix}")
        kv_b = state.pop(a + "kv_b_proj.weight").view(h, c.qk_nope_head_dim + c.v_head_dim, lat)
        state[a + "w_uk"] = kv_b[:, :c.qk_nope_head_dim].contiguous()
        state[a + "w_uv"] = kv_b[:, c.qk_nope_head_dim:].transpose(1, 2).contiguous()


def _gated_mlp_shapes(p: str, hidden: int, intermediate: int, bias: bool) -> dict[str, tuple[int, ...]]:
    shapes = {f"{p}gate_proj.weight": (intermediate, hidden), f"{p}up_proj.weight": (intermediate, hidden),
              f"{p}down_proj.weight": (hidden, intermediate)}
    if bias:
        shapes.update({f"{p}gate_proj.bias": (intermediate,), f"{p}up_proj.bias": (intermediate,),
                       f"{p}down_proj.bias": (hidden,)})
    return shapes


def _fuse_gate_up(state: dict[str, torch.Tensor], p: str) -> None:
    for suffix in ("weight", "bias"):
        if f"{p}gate_proj.{suffix}" in state:
            fuse_into(state, [f"{p}gate_proj.{suffix}", f"{p}up_proj.{suffix}"], f"{p}gate_up_proj.{suffix}")


def _is_mtp_layer(name: str, num_hidden_layers: int) -> bool:
    m = _LAYER.match(name)
    return m is not None and int(m.group(1)) >= num_hidden_layers


def create_deepseek_model(cfg: DeepSeekConfig, dtype: torch.dtype = torch.float32,
                          device: str | torch.device = "cpu") -> DeepSeekModel:
    """A model with meta-device parameters; ``load_weights`` gives them real tensors."""
    return DeepSeekModel(cfg, dtype, device)
