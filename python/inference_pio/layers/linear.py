"""Dense linear layer over ``ops.linear``.

Routing is the op's (the dispatcher's): on CPU with few rows (decode) the streaming kernel, since
torch's bfloat16 matmul runs far below memory bandwidth at M = 1 and decode is 80%+ matmul;
torch's matmul for prefill and on GPUs; the custom op under torch.compile. The layer calls the
op's ``LinearHandle``, fetched once per weight, so a decode step pays no per-call routing or
weight validation in Python.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..ops.linear import LinearHandle


class Linear(nn.Module):
    """``y [T, out_features] = x [T, in_features] @ weight.T (+ bias)``; weight ``[out, in]``.

    Fused projections (qkv, gate_up) are a single ``Linear`` whose rows the checkpoint loader
    concatenated; the owner keeps the split sizes. x may also be ``[..., in_features]``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype, device=device),
                                   requires_grad=False)
        self.bias = (nn.Parameter(torch.empty(out_features, dtype=dtype, device=device), requires_grad=False)
                     if bias else None)
        self._handle: LinearHandle | None = None

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``x [T, in]`` -> ``[T, out]``, written into ``out`` when given (no allocation)."""
        # _parameters, not self.weight: nn.Module's attribute lookup costs more than the check.
        params = self._parameters
        handle = self._handle
        if handle is None or handle.weight is not params["weight"] or handle.bias is not params.get("bias"):
            handle = self._handle = LinearHandle(params["weight"], params.get("bias"))
        return handle(x, out)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
