"""Multi-head latent attention (MLA) over a cache that holds only the compressed latent.

Per token and layer the cache keeps one row ``[k_rope (R), c_kv (L)]`` (R = qk_rope_head_dim,
L = kv_lora_rank), never the expanded per-head keys and values. Attention runs in the absorbed
form: ``W_UK`` (the key half of ``kv_b_proj``) is folded into each head's query, attention runs
over the latent rows, and ``W_UV`` (the value half) expands the attended latent per head.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from inference_pio.layers import Linear, RMSNorm
from inference_pio.layers.step_context import StepContext

from ..config import DeepSeekConfig
from .paged_latent_attention import kernels_support, paged_latent_attention, write_latent

LATENT_NORM_EPS = 1e-6  # q_a_layernorm / kv_a_layernorm use the RMSNorm default, not rms_norm_eps


class MultiHeadLatentAttention(nn.Module):
    """Parameters (built from the checkpoint at load):

    - ``qkv_a_proj [q_in + R + L, hidden]``: everything computed from the hidden state in one
      matmul: ``q_a_proj`` (or ``q_proj`` without q LoRA; q_in rows), then ``kv_a_proj_with_mqa``'s
      rope rows and latent rows (in that order, so a cached row starts with its rotary dims).
    - ``q_a_layernorm [q_lora_rank]``, ``q_b_proj [H * (nope + R), q_lora_rank]`` with q LoRA.
    - ``kv_a_layernorm [L]``; ``w_uk [H, nope, L]`` and ``w_uv [H, L, v]``, the two halves of
      ``kv_b_proj``; ``o_proj [hidden, H * v]``.
    """

    def __init__(self, cfg: DeepSeekConfig, dtype: torch.dtype):
        super().__init__()
        self.cfg = cfg
        h, r, lat = cfg.num_attention_heads, cfg.qk_rope_head_dim, cfg.kv_lora_rank
        self.q_size = h * cfg.qk_head_dim
        self.q_in = cfg.q_lora_rank or self.q_size
        self.qkv_a_proj = Linear(cfg.hidden_size, self.q_in + r + lat, cfg.attention_bias, dtype)
        if cfg.q_lora_rank:
            self.q_a_layernorm = RMSNorm(cfg.q_lora_rank, LATENT_NORM_EPS, dtype)
            self.q_b_proj = Linear(cfg.q_lora_rank, self.q_size, False, dtype)
        self.kv_a_layernorm = RMSNorm(lat, LATENT_NORM_EPS, dtype)
        self.w_uk = nn.Parameter(torch.empty(h, cfg.qk_nope_head_dim, lat, dtype=dtype), requires_grad=False)
        self.w_uv = nn.Parameter(torch.empty(h, lat, cfg.v_head_dim, dtype=dtype), requires_grad=False)
        self.o_proj = Linear(h * cfg.v_head_dim, cfg.hidden_size, cfg.attention_bias, dtype)
        self.scale = cfg.softmax_scale
        self.use_kernels = kernels_support(cfg.latent_dim)

    def forward(self, x: torch.Tensor, step: StepContext, cache: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``x [T, hidden]`` -> ``out [T, hidden]``; writes the step's latent rows into this layer's
        ``cache [num_blocks, block_size, 1, R + L]`` at ``step.meta.slot_mapping`` first."""
        c, t, dt, ws, meta = self.cfg, x.shape[0], x.dtype, step.workspace, step.meta
        h, r, lat, nope, dim = c.num_attention_heads, c.qk_rope_head_dim, c.kv_lora_rank, c.qk_nope_head_dim, c.latent_dim
        a = self.qkv_a_proj(x, out=ws.get("mla.a", t, self.q_in + r + lat, dt))
        q = a[:, :self.q_in]
        if c.q_lora_rank:
            q = self.q_b_proj(self.q_a_layernorm(q, out=ws.get("mla.q_a", t, self.q_in, dt)),
                              out=ws.get("mla.q", t, self.q_size, dt))
        q = q.view(t, h, c.qk_head_dim)

        rows = ws.get("mla.rows", t, dim, dt)  # the cached rows: [k_rope, norm(c_kv)]
        rows[:, :r].copy_(a[:, self.q_in:self.q_in + r])
        rows[:, r:].copy_(self.kv_a_layernorm(a[:, self.q_in + r:], out=ws.get("mla.c_kv", t, lat, dt)))

        query = ws.get("mla.query", t, h * dim, dt).view(t, h, dim)  # absorbed: [q_rope, q_nope @ W_UK]
        query[:, :, :r].copy_(q[:, :, nope:])
        absorbed = torch.bmm(q[:, :, :nope].transpose(0, 1), self.w_uk, out=ws.get("mla.qk", h * t, lat, dt).view(h, t, lat))
        query[:, :, r:].copy_(absorbed.transpose(0, 1))
        step.rotary(step.positions, query.view(t, h * dim), rows)  # the first R dims of every head rotate

        write_latent(rows.view(t, 1, dim), cache, meta)
        attn = paged_latent_attention(query, cache, meta, self.scale, ws.get("mla.attn", t, h * dim, dt).view(t, h, dim),
                                      self.use_kernels)
        values = torch.bmm(attn[:, :, r:].transpose(0, 1), self.w_uv,
                           out=ws.get("mla.v", h * t, c.v_head_dim, dt).view(h, t, c.v_head_dim))
        heads = ws.get("mla.heads", t, h * c.v_head_dim, dt)
        heads.view(t, h, c.v_head_dim).copy_(values.transpose(0, 1))
        return self.o_proj(heads, out=out)
