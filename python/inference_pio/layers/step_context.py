"""``StepContext``: what every layer of one engine step reads, handed down as one object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .rotary import RotaryEmbedding
from .workspace import Workspace


@dataclass(slots=True)
class StepContext:
    """One step's positions ``[T]``, its ``AttentionMetadata`` (``meta``), the per-layer paged caches
    (layer ``i`` reads ``key_caches[i]`` / ``value_caches[i]``), the model's rotary tables and its
    workspace of reused buffers. Built once per step by the model; layers only read it."""

    positions: torch.Tensor
    meta: Any
    key_caches: Sequence[torch.Tensor]
    value_caches: Sequence[torch.Tensor]
    rotary: RotaryEmbedding
    workspace: Workspace
