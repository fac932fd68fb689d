"""The BERT encoder over packed sequences, assembled from ``inference_pio.layers`` / ``ops``.

``forward`` takes every text's tokens back to back (``cu_seqlens`` marks where each starts), so a
batch carries no padding: attention is ``ops.prefill_attention`` with ``causal=False`` over each
sequence's own tokens. Post-norm blocks: ``x = LN(x + attn(x))``, ``x = LN(x + mlp(x))``.
q/k/v rows are fused into one projection at load time.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from inference_pio.layers import Linear
from inference_pio.ops import prefill_attention
from inference_pio.weights import WeightLoadError, fuse_into, load_state, open_checkpoint

from .config import GELU_APPROXIMATIONS, BertConfig

# transformers' names (after the optional "bert." prefix) -> ours, per layer and for the embeddings.
_LAYER_NAMES = {"attention.output.dense": "o_proj", "attention.output.LayerNorm": "attn_norm",
                "intermediate.dense": "up_proj", "output.dense": "down_proj", "output.LayerNorm": "mlp_norm"}
_EMBEDDING_NAMES = {"word_embeddings": "word_embeddings", "position_embeddings": "position_embeddings",
                    "token_type_embeddings": "token_type_embeddings", "LayerNorm": "embed_norm"}


def _activation(cfg: BertConfig):
    if cfg.hidden_act == "relu":
        return F.relu
    return functools.partial(F.gelu, approximate=GELU_APPROXIMATIONS[cfg.hidden_act])


class BertLayer(nn.Module):
    """Bidirectional self-attention and the GELU MLP, each followed by residual add + LayerNorm."""

    def __init__(self, cfg: BertConfig, dtype: torch.dtype):
        super().__init__()
        h = cfg.hidden_size
        self.num_heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        self.qkv_proj = Linear(h, 3 * h, True, dtype)
        self.o_proj = Linear(h, h, True, dtype)
        self.attn_norm = nn.LayerNorm(h, cfg.layer_norm_eps, dtype=dtype)
        self.up_proj = Linear(h, cfg.intermediate_size, True, dtype)
        self.down_proj = Linear(cfg.intermediate_size, h, True, dtype)
        self.mlp_norm = nn.LayerNorm(h, cfg.layer_norm_eps, dtype=dtype)
        self.act = _activation(cfg)

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int) -> torch.Tensor:
        t = x.shape[0]
        # Views of the fused row: [T, heads, head_dim] with token stride 3*hidden (the op accepts it).
        q, k, v = self.qkv_proj(x).view(t, 3, self.num_heads, self.head_dim).unbind(1)
        attn = prefill_attention(q, k, v, cu_seqlens, cu_seqlens, causal=False,
                                 max_seqlen_q=max_seqlen, max_seqlen_k=max_seqlen)
        x = self.attn_norm(x + self.o_proj(attn.view(t, -1)))
        return self.mlp_norm(x + self.down_proj(self.act(self.up_proj(x))))


class BertModel(nn.Module):
    """BERT embeddings + encoder; returns the last hidden states (no pooler: sentence models skip it)."""

    def __init__(self, cfg: BertConfig, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.config = cfg
        h = cfg.hidden_size
        with torch.device("meta"):  # real tensors arrive from the checkpoint (load_weights)
            self.word_embeddings = nn.Embedding(cfg.vocab_size, h, dtype=dtype)
            self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, h, dtype=dtype)
            self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, h, dtype=dtype)
            self.embed_norm = nn.LayerNorm(h, cfg.layer_norm_eps, dtype=dtype)
            self.layers = nn.ModuleList(BertLayer(cfg, dtype) for _ in range(cfg.num_hidden_layers))

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, cu_seqlens: torch.Tensor,
                max_seqlen: int, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Last hidden states ``[T, hidden]`` (model dtype) of packed sequences.

        input_ids, positions (within each sequence, from 0), token_type_ids (default all 0):
        ``[T]`` int64; ``cu_seqlens``: ``[B+1]`` int32 prefix sums of the sequence lengths;
        ``max_seqlen``: the longest sequence. All on the model's device.
        """
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        if token_type_ids is None:
            x += self.token_type_embeddings.weight[0]
        else:
            x += self.token_type_embeddings(token_type_ids)
        x = self.embed_norm(x)
        for layer in self.layers:
            x = layer(x, cu_seqlens, max_seqlen)
        return x

    # ----- weights -----

    def checkpoint_shapes(self, prefix: str = "") -> dict[str, tuple[int, ...]]:
        """The transformers tensor names (with ``prefix``, e.g. "bert.") and shapes this model reads."""
        c, h = self.config, self.config.hidden_size
        e = f"{prefix}embeddings."
        shapes = {e + "word_embeddings.weight": (c.vocab_size, h),
                  e + "position_embeddings.weight": (c.max_position_embeddings, h),
                  e + "token_type_embeddings.weight": (c.type_vocab_size, h),
                  e + "LayerNorm.weight": (h,), e + "LayerNorm.bias": (h,)}
        per_layer = {"attention.self.query": (h, h), "attention.self.key": (h, h), "attention.self.value": (h, h),
                     "attention.output.dense": (h, h), "attention.output.LayerNorm": (h,),
                     "intermediate.dense": (c.intermediate_size, h), "output.dense": (h, c.intermediate_size),
                     "output.LayerNorm": (h,)}
        for i in range(c.num_hidden_layers):
            for name, shape in per_layer.items():
                p = f"{prefix}encoder.layer.{i}.{name}."
                shapes[p + "weight"], shapes[p + "bias"] = shape, shape[:1]
        return shapes

    def load_weights(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        """Read the safetensors checkpoint at ``path`` (a bare ``BertModel`` or one under ``bert.``),
        fuse q/k/v rows, adopt the tensors. Heads (pooler, MLM) are not read.

        Raises ``WeightLoadError`` naming missing or mis-shaped tensors.
        """
        prefix = "bert." if "bert.embeddings.word_embeddings.weight" in open_checkpoint(path).shapes() else ""
        expected = self.checkpoint_shapes(prefix)
        dtype = self.word_embeddings.weight.dtype
        state = load_state(path, expected, dtype=dtype, strict=False, device=device, floating=True)
        missing = [name for name in expected if name not in state]
        if missing:
            raise WeightLoadError(f"{path}: checkpoint does not match the BERT model; missing: {', '.join(missing)}")
        self._adopt(state, prefix)

    def _adopt(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        ours = {}
        for i in range(self.config.num_hidden_layers):
            p = f"{prefix}encoder.layer.{i}."
            for suffix in ("weight", "bias"):
                fused = f"{p}attention.self.qkv.{suffix}"
                fuse_into(state, [f"{p}attention.self.{n}.{suffix}" for n in ("query", "key", "value")], fused)
                ours[f"layers.{i}.qkv_proj.{suffix}"] = state.pop(fused)
                for theirs, mine in _LAYER_NAMES.items():
                    ours[f"layers.{i}.{mine}.{suffix}"] = state.pop(f"{p}{theirs}.{suffix}")
        for theirs, mine in _EMBEDDING_NAMES.items():
            for suffix in ("weight", "bias") if mine == "embed_norm" else ("weight",):
                ours[f"{mine}.{suffix}"] = state.pop(f"{prefix}embeddings.{theirs}.{suffix}")
        missing, unexpected = self.load_state_dict(ours, strict=False, assign=True)
        if missing or unexpected:  # a mapping bug, not a checkpoint problem
            raise WeightLoadError(f"weights do not fit the BERT model; missing {missing}, unexpected {unexpected}")
        for p in self.parameters():
            p.requires_grad_(False)


def create_bert_model(cfg: BertConfig, dtype: torch.dtype = torch.float32) -> BertModel:
    """A model with meta-device parameters; ``load_weights`` gives them real tensors."""
    return BertModel(cfg, dtype)
