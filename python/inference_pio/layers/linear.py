"""Dense linear layer (a quantized linear will sit beside it).

On CPU with few rows (decode) it calls the streaming kernel of ``ops.linear`` directly: torch's
bfloat16 matmul runs far below memory bandwidth at M = 1, and decode is 80%+ matmul. Everything
else (prefill, GPUs, torch.compile tracing, a forced non-cpu backend) keeps torch's matmul.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import _dispatch
from ..ops.linear import SMALL_M_MAX, linear_cpu_unchecked

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class Linear(nn.Module):
    """``y [T, out_features] = x [T, in_features] @ weight.T (+ bias)``; weight ``[out, in]``.

    Fused projections (qkv, gate_up) are a single ``Linear`` whose rows the checkpoint loader
    concatenated; the owner keeps the split sizes.
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

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``x [T, in]`` -> ``[T, out]``, written into ``out`` when given (no allocation)."""
        if self._use_cpu_kernel(x):
            if out is None:
                out = torch.empty(x.shape[0], self.out_features, dtype=x.dtype)
            # Validated here only as far as routing needs; the C++ kernel checks shapes and strides.
            linear_cpu_unchecked(x, self.weight, self.bias, out)
            return out
        if out is None:
            return F.linear(x, self.weight, self.bias)
        if self.bias is None:
            return torch.mm(x, self.weight.t(), out=out)
        return torch.addmm(self.bias, x, self.weight.t(), out=out)

    def _use_cpu_kernel(self, x: torch.Tensor) -> bool:
        """Few rows on CPU in a dtype the kernel handles, and nothing forcing another backend."""
        w = self.weight
        return (
            x.device.type == "cpu"
            and x.dim() == 2
            and x.shape[0] <= SMALL_M_MAX
            and x.dtype in _KERNEL_DTYPES
            and x.dtype == w.dtype
            and w.device.type == "cpu"
            and w.is_contiguous()
            and (x.shape[1] <= 1 or x.stride(1) == 1)
            and not torch.compiler.is_compiling()
            and _dispatch.forced_backend() in (None, "cpu")
        )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
