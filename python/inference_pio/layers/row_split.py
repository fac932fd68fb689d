"""A fused projection kept in row parts: what a GGUF with mixed types inside a group loads as."""

from __future__ import annotations

import torch
import torch.nn as nn


class RowSplitLinear(nn.Module):
    """A fused projection kept as ``parts`` (``Linear`` or ``QuantizedLinear``): ``y = [p(x) for p]``
    concatenated along the features, written into ``out [T, sum(out_features)]`` when given.

    A Q4_K_M file keeps V in Q6_K beside Q4_K Q and K: their block rows cannot concatenate into one
    quantized matrix, so each part computes its own slice of the output."""

    def __init__(self, parts: list[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        pieces = [part(x) for part in self.parts]
        return torch.cat(pieces, dim=-1) if out is None else torch.cat(pieces, dim=-1, out=out)
