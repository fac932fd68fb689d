"""RMSNorm over the last dimension, optionally fused with the residual add."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..ops.rms_norm import fused_add_rms_norm, rms_norm


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)``, weight ``[hidden]``."""

    def __init__(self, hidden_size: int, eps: float = 1e-6,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=dtype, device=device), requires_grad=False)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None,
                out: torch.Tensor | None = None) -> torch.Tensor:
        """Without ``residual``: returns the norm of ``x [T, hidden]`` (into ``out`` if given).

        With ``residual``: in place, ``residual += x`` then ``x = norm(residual)`` (the
        pre-norm transformer's add + norm in one pass); returns ``x``.
        """
        if residual is None:
            return rms_norm(x, self.weight, self.eps, out=out)
        fused_add_rms_norm(x, residual, self.weight, self.eps)
        return x
