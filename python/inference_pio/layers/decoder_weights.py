"""What a Llama-family checkpoint holds, declared as data, and how the shared decoder adopts it.

A ``DecoderWeights`` names each layer's tensors in the checkpoint (transformers' names under
``model.layers.N.``), their shapes as config attributes, which config switch says a projection has
a bias, and which checkpoint projections stack row-wise into one of the decoder's modules
(q/k/v -> ``self_attn.qkv_proj``, gate/up -> ``mlp.gate_up_proj``). A family whose checkpoint
stores the fused matrices (Phi-3) declares them as projections and no stacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..weights import WeightLoadError, fuse_into

LAYER_PREFIX = "model.layers.{}."


@dataclass(frozen=True)
class Projection:
    """A layer's projection matrix ``[rows, cols]`` (config attribute names); ``bias``: the config
    switch (attribute name) that says whether the checkpoint also has ``<name>.bias [rows]``."""

    name: str
    rows: str
    cols: str
    bias: str | None = None


@dataclass(frozen=True)
class Norm:
    """A layer's norm weight ``[size]``; present when the config switch ``when`` is true (always if None)."""

    name: str
    size: str = "hidden_size"
    when: str | None = None


@dataclass(frozen=True)
class Stack:
    """Checkpoint projections ``parts`` whose rows stack, in order, into the decoder's ``target``."""

    target: str
    parts: tuple[str, ...]


@dataclass(frozen=True)
class DecoderWeights:
    projections: tuple[Projection, ...]
    norms: tuple[Norm, ...]
    stacks: tuple[Stack, ...] = ()

    def layer_shapes(self, cfg) -> dict[str, tuple[int, ...]]:
        """One layer's checkpoint tensor names (relative to the layer) and shapes under ``cfg``."""
        shapes: dict[str, tuple[int, ...]] = {}
        for norm in self.norms:
            if norm.when is None or getattr(cfg, norm.when):
                shapes[f"{norm.name}.weight"] = (getattr(cfg, norm.size),)
        for p in self.projections:
            rows = getattr(cfg, p.rows)
            shapes[f"{p.name}.weight"] = (rows, getattr(cfg, p.cols))
            if p.bias is not None and getattr(cfg, p.bias):
                shapes[f"{p.name}.bias"] = (rows,)
        return shapes

    def checkpoint_shapes(self, cfg) -> dict[str, tuple[int, ...]]:
        """Every tensor name and shape a checkpoint of ``cfg`` holds (before stacking)."""
        shapes = {"model.embed_tokens.weight": (cfg.vocab_size, cfg.hidden_size),
                  "model.norm.weight": (cfg.hidden_size,), "lm_head.weight": (cfg.vocab_size, cfg.hidden_size)}
        per_layer = self.layer_shapes(cfg)
        for i in range(cfg.num_hidden_layers):
            prefix = LAYER_PREFIX.format(i)
            shapes.update({prefix + name: shape for name, shape in per_layer.items()})
        return shapes

    def stack(self, state: dict, num_layers: int) -> None:
        """In place: each layer's ``parts`` (weights, and biases where present) -> their ``target``."""
        for i in range(num_layers):
            prefix = LAYER_PREFIX.format(i)
            for s in self.stacks:
                for suffix in ("weight", "bias"):
                    names = [f"{prefix}{part}.{suffix}" for part in s.parts]
                    if names[0] in state:
                        fuse_into(state, names, f"{prefix}{s.target}.{suffix}")


# Llama and the families that keep its checkpoint layout (Mistral, Qwen2, Qwen3).
LLAMA_WEIGHTS = DecoderWeights(
    projections=(Projection("self_attn.q_proj", "q_size", "hidden_size", "qkv_bias"),
                 Projection("self_attn.k_proj", "kv_size", "hidden_size", "qkv_bias"),
                 Projection("self_attn.v_proj", "kv_size", "hidden_size", "qkv_bias"),
                 Projection("self_attn.o_proj", "hidden_size", "q_size", "o_bias"),
                 Projection("mlp.gate_proj", "intermediate_size", "hidden_size", "mlp_bias"),
                 Projection("mlp.up_proj", "intermediate_size", "hidden_size", "mlp_bias"),
                 Projection("mlp.down_proj", "hidden_size", "intermediate_size", "mlp_bias")),
    norms=(Norm("input_layernorm"), Norm("post_attention_layernorm"),
           Norm("self_attn.q_norm", "head_dim", "qk_norm"), Norm("self_attn.k_norm", "head_dim", "qk_norm")),
    stacks=(Stack("self_attn.qkv_proj", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
            Stack("mlp.gate_up_proj", ("mlp.gate_proj", "mlp.up_proj"))),
)


def adopt_state(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """``state`` (transformers' names, stacked already) becomes ``model``'s parameters; consumed.
    Raises ``WeightLoadError`` naming what does not fit."""
    ours = {name.removeprefix("model."): t for name, t in state.items()}
    state.clear()
    missing, unexpected = model.load_state_dict(ours, strict=False, assign=True)
    if missing or unexpected:
        raise WeightLoadError(f"{where}: weights do not fit the model; missing {missing}, unexpected {unexpected}")
    for p in model.parameters():
        p.requires_grad_(False)
