"""The shared Llama-family decoder over the paged KV cache: Llama, Mistral, Qwen2, Qwen3... are configs of it.

``forward`` takes packed tokens of one engine step (prompt chunks and/or decode tokens of many
sequences) plus their ``AttentionMetadata`` and returns logits. What differs between families is
read from the config (see ``plugin/decoder_config.py``): ``qkv_bias`` / ``o_bias`` / ``mlp_bias``,
``qk_norm`` (per-head RMSNorm of q and k before RoPE, as Qwen3), ``layer_sliding_windows``,
``tie_word_embeddings``, ``rotary_dim`` and ``weight_layout`` (which checkpoint names stack into
qkv and gate_up, ``decoder_weights.py``). Checkpoint differences are settled at load time.

Module names follow transformers' Llama (``embed_tokens``, ``layers[i].self_attn.qkv_proj``...):
tensor parallelism and the fused decode plan rely on them.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..ops.rms_norm import rms_norm
from ..weights import load_state
from .attention import PagedAttention
from .decode_plan import DecodePlan, LayerPlan, plan_part
from .decoder_weights import adopt_state
from .fused_decode import fused_decode_step
from .linear import Linear
from .mlp import GatedMLP
from .norm import RMSNorm
from .quantized import QuantizedEmbedding
from .rotary import RotaryEmbedding
from .step_context import StepContext
from .workspace import Workspace


class TokenEmbedding(nn.Embedding):
    """``nn.Embedding`` called like ``QuantizedEmbedding``: ``ids [T]`` -> rows written into ``out``."""

    def forward(self, ids: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return torch.index_select(self.weight, 0, ids, out=out) if out is not None else self.weight[ids]

    def reset_parameters(self) -> None:
        # The weights come from the checkpoint; a random init on the meta device costs seconds of imports.
        pass


class DecoderAttention(nn.Module):
    """Fused qkv projection, optional per-head q/k RMSNorm, RoPE on q/k in place, paged attention,
    output projection."""

    def __init__(self, cfg, dtype: torch.dtype, sliding_window: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.qkv_proj = Linear(cfg.hidden_size, cfg.q_size + 2 * cfg.kv_size, cfg.qkv_bias, dtype)
        self.o_proj = Linear(cfg.q_size, cfg.hidden_size, cfg.o_bias, dtype)
        self.attn = PagedAttention(cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim,
                                   sliding_window=sliding_window)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, dtype) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, dtype) if cfg.qk_norm else None

    def forward(self, x: torch.Tensor, step: StepContext, index: int, out: torch.Tensor) -> torch.Tensor:
        c, t, ws = self.cfg, x.shape[0], step.workspace
        qkv = self.qkv_proj(x, out=ws.get("qkv", t, c.q_size + 2 * c.kv_size, x.dtype))
        q, k, v = qkv.split([c.q_size, c.kv_size, c.kv_size], dim=-1)
        if self.q_norm is not None:
            q, k = self._head_norm(q, self.q_norm, "q", ws), self._head_norm(k, self.k_norm, "k", ws)
        step.rotary(step.positions, q, k)
        heads = ws.get("attn", t, c.q_size, x.dtype)
        self.attn(q.view(t, -1, c.head_dim), k.view(t, -1, c.head_dim), v.view(t, -1, c.head_dim),
                  step.key_caches[index], step.value_caches[index], step.meta, out=heads.view(t, -1, c.head_dim))
        return self.o_proj(heads, out=out)

    def _head_norm(self, x: torch.Tensor, norm: RMSNorm, name: str, ws: Workspace) -> torch.Tensor:
        """RMSNorm of each head of ``x [T, heads * D]`` (a strided slice of the qkv row) -> a new ``[T, heads * D]``."""
        t, width, d = x.shape[0], x.shape[1], self.cfg.head_dim
        rows = ws.get(f"{name}.heads", t, width, x.dtype).copy_(x)  # heads as rows need one stride
        return rms_norm(rows.view(-1, d), norm.weight, norm.eps, out=ws.get(f"{name}.normed", t * width // d, d,
                                                                            x.dtype)).view(t, width)


class DecoderLayer(nn.Module):
    """Pre-norm block; the residual stream is one buffer updated in place by the fused add + norm."""

    def __init__(self, cfg, index: int, dtype: torch.dtype):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.self_attn = DecoderAttention(cfg, dtype, cfg.layer_sliding_windows[index])
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias, dtype)

    def forward(self, h: torch.Tensor, residual: torch.Tensor, step: StepContext, index: int) -> torch.Tensor:
        """``h`` is the previous sub-block's output (added to ``residual`` in place); returns the new one."""
        x = self.input_layernorm(h, residual)
        h = self.self_attn(x, step, index, out=h)
        x = self.post_attention_layernorm(h, residual)
        return self.mlp(x, out=h, workspace=step.workspace)


class DecoderModel(nn.Module):
    """Decoder + LM head. Parameters are named like the stacked checkpoint (see ``adopt_hf_state``).

    A family with layers of its own (DeepSeek) overrides ``build_layer`` / ``build_rotary`` and the
    weight methods, sets ``fused_decode = False`` when ``decode_plan`` cannot describe it, and keeps
    the rest: embedding, the step loop over its layers, final norm and head, workspace.
    """

    fused_decode = True  # whether decode steps try the fused C++ plan (``decode_plan``)

    def __init__(self, cfg, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        super().__init__()
        self.config = cfg
        self.compute_dtype = dtype
        with torch.device("meta"):  # real tensors arrive from the checkpoint (load_weights)
            self.embed_tokens = TokenEmbedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype)
            self.layers = nn.ModuleList(self.build_layer(cfg, i, dtype) for i in range(cfg.num_hidden_layers))
            self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
            self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, False, dtype)
        self.rotary = self.build_rotary(cfg, device)
        self.workspace = Workspace(device)

    def build_layer(self, cfg, index: int, dtype: torch.dtype) -> nn.Module:
        return DecoderLayer(cfg, index, dtype)

    def build_rotary(self, cfg, device) -> RotaryEmbedding:
        return RotaryEmbedding(cfg.head_dim, cfg.rotary_dim, cfg.max_seq_len, cfg.rope_theta, cfg.rope_scaling,
                               cfg.max_position_embeddings, device=device)

    @torch.no_grad()  # not inference_mode: its tensors would refuse the sampler's in-place edits
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta, key_caches, value_caches,
                all_logits: bool = False) -> torch.Tensor:
        """Logits of one step.

        input_ids, positions: ``[T]`` int64, the step's new tokens packed in batch order;
        ``meta``: ``AttentionMetadata`` of the step; ``key_caches[i]`` / ``value_caches[i]``: layer
        ``i``'s ``[num_blocks, block_size, KVH, D]`` caches. Returns ``[num_seqs, vocab]`` for each
        sequence's last new token, or ``[T, vocab]`` with ``all_logits`` (tests); model dtype.
        """
        if self.fused_decode and (logits := fused_decode_step(self, input_ids, positions, meta, key_caches,
                                                              value_caches)) is not None:
            return logits  # a CPU decode step, run whole in C++ (layers/fused_decode.py)
        ws, t, hidden = self.workspace, input_ids.shape[0], self.config.hidden_size
        dtype = self.compute_dtype
        step = StepContext(positions, meta, key_caches, value_caches, self.rotary, ws)
        residual = self.embed_tokens(input_ids, out=ws.get("residual", t, hidden, dtype))
        # The first block has nothing to add yet: a zero "previous output" makes the fused add a no-op.
        h = ws.get("hidden", t, hidden, dtype).zero_()
        for i, layer in enumerate(self.layers):
            h = layer(h, residual, step, i)
        h = self.norm(h, residual)
        if not all_logits and meta.num_seqs < t:
            h = h.index_select(0, (meta.cu_seqlens_q[1:] - 1).long())
        return self.lm_head(h, out=ws.get("logits", h.shape[0], self.config.vocab_size, dtype))

    def decode_plan(self) -> DecodePlan:
        """This model's modules by their part in the fused decode step (``layers/fused_decode.py``).

        Raises ``FusedDecodeUnsupported`` naming a module that is not what its part needs (a layer
        swapped for another kind, a missing rotary table)."""
        layers = []
        for i, layer in enumerate(self.layers):
            p = f"layers.{i}."
            attn = plan_part(layer, "self_attn", DecoderAttention, p)
            mlp = plan_part(layer, "mlp", GatedMLP, p)
            layers.append(LayerPlan(
                prefix=p, input_norm=plan_part(layer, "input_layernorm", RMSNorm, p),
                qkv=attn.qkv_proj, o_proj=attn.o_proj,
                post_norm=plan_part(layer, "post_attention_layernorm", RMSNorm, p),
                gate_up=mlp.gate_up_proj, down=mlp.down_proj,
                attention=plan_part(attn, "attn", PagedAttention, p + "self_attn."),
                q_norm=attn.q_norm, k_norm=attn.k_norm))
        return DecodePlan(embed=plan_part(self, "embed_tokens", (nn.Embedding, QuantizedEmbedding)),
                          layers=tuple(layers), final_norm=plan_part(self, "norm", RMSNorm),
                          lm_head=plan_part(self, "lm_head", nn.Module),
                          rotary=plan_part(self, "rotary", RotaryEmbedding))

    # ----- weights -----

    def checkpoint_shapes(self) -> dict[str, tuple[int, ...]]:
        """The HF tensor names and shapes this model reads (before stacking)."""
        return self.config.weight_layout.checkpoint_shapes(self.config)

    def load_weights(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        """Read the safetensors checkpoint at ``path``, stack qkv / gate_up rows, adopt the tensors.

        Raises ``WeightLoadError`` naming missing, unexpected or mis-shaped tensors.
        """
        state = load_state(path, self.checkpoint_shapes(), dtype=self.compute_dtype, device=device,
                           tie_word_embeddings=self.config.tie_word_embeddings, floating=True)
        self.adopt_hf_state(state, where=str(path))

    def load_gguf(self, source, device: str | torch.device = "cpu") -> None:
        """Read a GGUF file (path or opened ``GGUFFile``); quantized matrices stay quantized (``decoder_gguf.py``)."""
        from .decoder_gguf import load_gguf_weights

        load_gguf_weights(self, source, device)

    def adopt_hf_state(self, state: dict[str, torch.Tensor], where: str = "state dict") -> None:
        """Take tensors named like transformers' (``model.layers.0.self_attn.q_proj.weight``...),
        already checked and in the model's dtype; ``state`` is consumed (stacked in place)."""
        self.config.weight_layout.stack(state, self.config.num_hidden_layers)
        adopt_state(self, state, where)
