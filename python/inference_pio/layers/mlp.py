"""The gated MLP of Llama-style models: ``down(silu(gate(x)) * up(x))``."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..ops.activation import silu_and_mul
from .linear import Linear
from .workspace import Workspace


class GatedMLP(nn.Module):
    """``gate_up`` is one ``Linear [2*intermediate, hidden]`` (gate rows first, fused at load)."""

    def __init__(self, hidden_size: int, intermediate_size: int, bias: bool = False,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        self.intermediate_size = intermediate_size
        self.gate_up_proj = Linear(hidden_size, 2 * intermediate_size, bias, dtype, device)
        self.down_proj = Linear(intermediate_size, hidden_size, bias, dtype, device)

    def forward(self, x: torch.Tensor, out: torch.Tensor, workspace: Workspace) -> torch.Tensor:
        """``x [T, hidden]`` -> ``out [T, hidden]``; intermediates live in ``workspace``."""
        tokens = x.shape[0]
        gate_up = self.gate_up_proj(x, out=workspace.get("mlp.gate_up", tokens, 2 * self.intermediate_size, x.dtype))
        act = silu_and_mul(gate_up, out=workspace.get("mlp.act", tokens, self.intermediate_size, x.dtype))
        return self.down_proj(act, out=out)
