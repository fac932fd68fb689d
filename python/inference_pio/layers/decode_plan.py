"""``DecodePlan``: the modules a decoder hands the fused decode step (``fused_decode.py``), by role.

The model builds it (``DecoderModel.decode_plan``), knowing which of its modules plays which part;
the fused step only reads the plan. A module that cannot play its part is refused by name with
``FusedDecodeUnsupported``, and the model decodes through its per-op path instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn


class FusedDecodeUnsupported(ValueError):
    """The model cannot run through the fused decode step; the message says which part and why."""


def plan_part(parent: object, attr: str, kind: type | tuple[type, ...], prefix: str = ""):
    """``parent.attr`` checked to be a ``kind``; errors name ``prefix + attr`` (the module's path)."""
    obj = getattr(parent, attr, None)
    if obj is None:
        raise FusedDecodeUnsupported(f"{prefix}{attr}: missing (a Llama-layout model has it)")
    if not isinstance(obj, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        article = "an" if names[0] in "AEIOU" else "a"
        raise FusedDecodeUnsupported(f"{prefix}{attr} must be {article} {names}, got {type(obj).__name__}")
    return obj


@dataclass(frozen=True)
class LayerPlan:
    """One decoder layer. ``prefix`` (``"layers.3."``) plus ``NAMES[field]`` is how messages name a part.

    Projections (``qkv``, ``o_proj``, ``gate_up``, ``down``) are ``Linear``, ``QuantizedLinear`` or
    ``RowSplitLinear`` of those; norms are ``RMSNorm``; ``attention`` is the ``PagedAttention``
    (heads, scale, sliding window); ``q_norm`` / ``k_norm`` the per-head RMSNorms, when the model has them.
    """

    prefix: str
    input_norm: nn.Module
    qkv: nn.Module
    o_proj: nn.Module
    post_norm: nn.Module
    gate_up: nn.Module
    down: nn.Module
    attention: nn.Module
    q_norm: nn.Module | None = None
    k_norm: nn.Module | None = None

    NAMES = {"input_norm": "input_layernorm", "qkv": "self_attn.qkv_proj", "o_proj": "self_attn.o_proj",
             "post_norm": "post_attention_layernorm", "gate_up": "mlp.gate_up_proj", "down": "mlp.down_proj",
             "attention": "self_attn.attn", "q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm"}

    def name(self, field: str) -> str:
        return self.prefix + self.NAMES[field]


@dataclass(frozen=True)
class DecodePlan:
    """The whole step: embedding table, layers, final norm, LM head and the rotary tables."""

    embed: nn.Module
    layers: tuple[LayerPlan, ...]
    final_norm: nn.Module
    lm_head: nn.Module
    rotary: nn.Module
