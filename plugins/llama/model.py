"""The Llama decoder over the paged KV cache, assembled from ``inference_pio.layers``.

``forward`` takes packed tokens of one engine step (prompt chunks and/or decode tokens of many
sequences) plus their ``AttentionMetadata`` and returns logits. Checkpoint differences are
settled at load time: q/k/v and gate/up rows are fused there, the head tied when asked.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from inference_pio.layers import GatedMLP, Linear, PagedAttention, RMSNorm, RotaryEmbedding, Workspace
from inference_pio.layers.fused_decode import fused_decode_step
from inference_pio.weights import WeightLoadError, fuse_into, load_state

from .config import LlamaConfig


class TokenEmbedding(nn.Embedding):
    """``nn.Embedding`` called like ``QuantizedEmbedding``: ``ids [T]`` -> rows written into ``out``."""

    def forward(self, ids: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        return torch.index_select(self.weight, 0, ids, out=out) if out is not None else self.weight[ids]

    def reset_parameters(self) -> None:
        # The weights come from the checkpoint; a random init on the meta device costs seconds of imports.
        pass


class LlamaAttention(nn.Module):
    """Fused qkv projection, RoPE on q/k in place, paged attention, output projection."""

    def __init__(self, cfg: LlamaConfig, dtype: torch.dtype):
        super().__init__()
        self.cfg = cfg
        self.qkv_proj = Linear(cfg.hidden_size, cfg.q_size + 2 * cfg.kv_size, cfg.attention_bias, dtype)
        self.o_proj = Linear(cfg.q_size, cfg.hidden_size, cfg.attention_bias, dtype)
        self.attn = PagedAttention(cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim)

    def forward(self, x, positions, rotary, key_cache, value_cache, meta, ws: Workspace, out):
        c, t = self.cfg, x.shape[0]
        qkv = self.qkv_proj(x, out=ws.get("qkv", t, c.q_size + 2 * c.kv_size, x.dtype))
        q, k, v = qkv.split([c.q_size, c.kv_size, c.kv_size], dim=-1)
        rotary(positions, q, k)
        heads = ws.get("attn", t, c.q_size, x.dtype)
        self.attn(q.view(t, -1, c.head_dim), k.view(t, -1, c.head_dim), v.view(t, -1, c.head_dim),
                  key_cache, value_cache, meta, out=heads.view(t, -1, c.head_dim))
        return self.o_proj(heads, out=out)


class LlamaDecoderLayer(nn.Module):
    """Pre-norm block; the residual stream is one buffer updated in place by the fused add + norm."""

    def __init__(self, cfg: LlamaConfig, dtype: torch.dtype):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.self_attn = LlamaAttention(cfg, dtype)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
        self.mlp = GatedMLP(cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias, dtype)

    def forward(self, h, residual, positions, rotary, key_cache, value_cache, meta, ws):
        """``h`` is the previous sub-block's output (added to ``residual`` in place); returns the new one."""
        x = self.input_layernorm(h, residual)
        h = self.self_attn(x, positions, rotary, key_cache, value_cache, meta, ws, out=h)
        x = self.post_attention_layernorm(h, residual)
        return self.mlp(x, out=h, workspace=ws)


class LlamaModel(nn.Module):
    """Llama decoder + LM head. Parameters are named like the fused checkpoint (see ``load_weights``)."""

    def __init__(self, cfg: LlamaConfig, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        super().__init__()
        self.config = cfg
        self.compute_dtype = dtype
        with torch.device("meta"):  # real tensors arrive from the checkpoint (load_weights)
            self.embed_tokens = TokenEmbedding(cfg.vocab_size, cfg.hidden_size, dtype=dtype)
            self.layers = nn.ModuleList(LlamaDecoderLayer(cfg, dtype) for _ in range(cfg.num_hidden_layers))
            self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype)
            self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size, False, dtype)
        self.rotary = RotaryEmbedding(cfg.head_dim, cfg.head_dim, cfg.max_seq_len, cfg.rope_theta,
                                      cfg.rope_scaling, cfg.max_position_embeddings, device=device)
        self.workspace = Workspace(device)

    @torch.no_grad()  # not inference_mode: its tensors would refuse the sampler's in-place edits
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta, key_caches, value_caches,
                all_logits: bool = False) -> torch.Tensor:
        """Logits of one step.

        input_ids, positions: ``[T]`` int64, the step's new tokens packed in batch order;
        ``meta``: ``AttentionMetadata`` of the step; ``key_caches[i]`` / ``value_caches[i]``: layer
        ``i``'s ``[num_blocks, block_size, KVH, D]`` caches. Returns ``[num_seqs, vocab]`` for each
        sequence's last new token, or ``[T, vocab]`` with ``all_logits`` (tests); model dtype.
        """
        if (logits := fused_decode_step(self, input_ids, positions, meta, key_caches, value_caches)) is not None:
            return logits  # a CPU decode step, run whole in C++ (layers/fused_decode.py)
        ws, t, hidden = self.workspace, input_ids.shape[0], self.config.hidden_size
        dtype = self.compute_dtype
        residual = self.embed_tokens(input_ids, out=ws.get("residual", t, hidden, dtype))
        # The first block has nothing to add yet: a zero "previous output" makes the fused add a no-op.
        h = ws.get("hidden", t, hidden, dtype).zero_()
        for i, layer in enumerate(self.layers):
            h = layer(h, residual, positions, self.rotary, key_caches[i], value_caches[i], meta, ws)
        h = self.norm(h, residual)
        if not all_logits:
            h = h.index_select(0, (meta.cu_seqlens_q[1:] - 1).long()) if meta.num_seqs < t else h
        return self.lm_head(h, out=ws.get("logits", h.shape[0], self.config.vocab_size, dtype))

    # ----- weights -----

    def checkpoint_shapes(self) -> dict[str, tuple[int, ...]]:
        """The HF tensor names and shapes this model reads (before fusion)."""
        c = self.config
        shapes = {"model.embed_tokens.weight": (c.vocab_size, c.hidden_size), "model.norm.weight": (c.hidden_size,),
                  "lm_head.weight": (c.vocab_size, c.hidden_size)}
        per_layer = {"self_attn.q_proj": (c.q_size, c.hidden_size), "self_attn.k_proj": (c.kv_size, c.hidden_size),
                     "self_attn.v_proj": (c.kv_size, c.hidden_size), "self_attn.o_proj": (c.hidden_size, c.q_size),
                     "mlp.gate_proj": (c.intermediate_size, c.hidden_size),
                     "mlp.up_proj": (c.intermediate_size, c.hidden_size),
                     "mlp.down_proj": (c.hidden_size, c.intermediate_size)}
        for i in range(c.num_hidden_layers):
            p = f"model.layers.{i}."
            shapes[p + "input_layernorm.weight"] = shapes[p + "post_attention_layernorm.weight"] = (c.hidden_size,)
            for name, shape in per_layer.items():
                shapes[f"{p}{name}.weight"] = shape
                if (c.attention_bias and name.startswith("self_attn")) or (c.mlp_bias and name.startswith("mlp")):
                    shapes[f"{p}{name}.bias"] = shape[:1]
        return shapes

    def load_weights(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        """Read the safetensors checkpoint at ``path``, fuse qkv / gate_up rows, adopt the tensors.

        Raises ``WeightLoadError`` naming missing, unexpected or mis-shaped tensors.
        """
        dtype = self.compute_dtype
        state = load_state(path, self.checkpoint_shapes(), dtype=dtype, device=device,
                           tie_word_embeddings=self.config.tie_word_embeddings, floating=True)
        self.adopt_hf_state(state, where=str(path))

    def load_gguf(self, source, device: str | torch.device = "cpu") -> None:
        """Read a GGUF file (path or opened ``GGUFFile``); quantized matrices stay quantized (see ``gguf.py``)."""
        from .gguf import load_gguf_weights

        load_gguf_weights(self, source, device)

    def adopt_hf_state(self, state: dict[str, torch.Tensor], where: str = "state dict") -> None:
        """Take tensors named like transformers' (``model.layers.0.self_attn.q_proj.weight``...),
        already checked and in the model's dtype; ``state`` is consumed (fused in place)."""
        for i in range(self.config.num_hidden_layers):
            p = f"model.layers.{i}."
            for suffix in ("weight", "bias"):
                if f"{p}self_attn.q_proj.{suffix}" in state:
                    fuse_into(state, [f"{p}self_attn.{n}_proj.{suffix}" for n in "qkv"], f"{p}self_attn.qkv_proj.{suffix}")
                if f"{p}mlp.gate_proj.{suffix}" in state:
                    fuse_into(state, [f"{p}mlp.gate_proj.{suffix}", f"{p}mlp.up_proj.{suffix}"], f"{p}mlp.gate_up_proj.{suffix}")
        ours = {name.removeprefix("model."): t for name, t in state.items()}
        state.clear()
        missing, unexpected = self.load_state_dict(ours, strict=False, assign=True)
        if missing or unexpected:
            raise WeightLoadError(f"{where}: weights do not fit the model; missing {missing}, unexpected {unexpected}")
        for p in self.parameters():
            p.requires_grad_(False)


def create_llama_model(cfg: LlamaConfig, dtype: torch.dtype = torch.float32,
                       device: str | torch.device = "cpu") -> LlamaModel:
    """A model with meta-device parameters; ``load_weights`` gives them real tensors."""
    return LlamaModel(cfg, dtype, device)
