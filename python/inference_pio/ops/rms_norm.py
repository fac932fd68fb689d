"""RMSNorm and residual-add + RMSNorm.

Layout: ``x`` is ``[..., hidden]`` with a contiguous last dimension (leading dimensions must
merge into rows without a copy); ``weight`` is ``[hidden]`` in x's dtype or float32.
Accumulation is float32 (or float64 for float64 inputs); the output is rounded once.
"""

from __future__ import annotations

import torch

from . import _dispatch
from ._checks import (FLOAT_DTYPES, check_no_aliasing, check_out, check_same_device, check_shape, check_tensor,
                      rows_2d)
from ._tensor import view
from .. import _native

_rms_norm = _dispatch.op("rms_norm")
_fused_add_rms_norm = _dispatch.op("fused_add_rms_norm")


def _acc_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The specification: ``x / sqrt(mean(x^2, -1) + eps) * weight`` in float32 (or wider)."""
    xf = x.to(_acc_dtype(x))
    rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (xf * rstd * weight.to(xf.dtype)).to(x.dtype)


def fused_add_rms_norm_reference(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> None:
    """The specification, in place: ``residual += x`` (rounded to its dtype), ``x = rms_norm(residual)``."""
    residual.copy_((residual.to(_acc_dtype(x)) + x.to(_acc_dtype(x))).to(residual.dtype))
    x.copy_(rms_norm_reference(residual, weight, eps))


def _check_weight(weight: torch.Tensor, x: torch.Tensor) -> None:
    check_tensor("weight", weight, ndim=1, dtypes={x.dtype, torch.float32}, contiguous=True)
    check_shape("weight", weight, (x.shape[-1],))
    check_same_device("weight", weight, "x", x)


def _check_eps(eps: object) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"eps must be a non-negative float, got {eps!r}")
    return float(eps)


@_dispatch.traced_as_custom_op("rms_norm")
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """RMSNorm of ``x [..., hidden]`` scaled by ``weight [hidden]``; returns ``out`` (new unless given)."""
    check_tensor("x", x, dtypes=FLOAT_DTYPES, last_dim_contiguous=True)
    if x.dim() == 0:
        raise ValueError("x must have at least 1 dimension, got a scalar")
    _check_weight(weight, x)
    eps = _check_eps(eps)
    out = check_out(out, tuple(x.shape), x)
    x2 = rows_2d("x", x)
    _rms_norm(x.device, x2, weight, eps, out.view(x2.shape))
    return out


@_dispatch.traced_as_custom_op("fused_add_rms_norm")
def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> None:
    """In place: ``residual += x``; ``x = rms_norm(residual, weight, eps)``. Both ``[..., hidden]``;
    neither may share memory with itself (stride-0 rows), the other or ``weight`` (ValueError)."""
    check_tensor("x", x, dtypes=FLOAT_DTYPES, last_dim_contiguous=True)
    if x.dim() == 0:
        raise ValueError("x must have at least 1 dimension, got a scalar")
    check_tensor("residual", residual, dtypes=(x.dtype,), last_dim_contiguous=True)
    check_shape("residual", residual, tuple(x.shape))
    check_same_device("residual", residual, "x", x)
    _check_weight(weight, x)
    eps = _check_eps(eps)
    check_no_aliasing({"x": x, "residual": residual}, {"weight": weight})
    _fused_add_rms_norm(x.device, rows_2d("x", x), rows_2d("residual", residual), weight, eps)


# Backends. Each takes 2-D validated tensors.
@_rms_norm.register("reference")
def _rms_norm_ref(x, weight, eps, out):
    out.copy_(rms_norm_reference(x, weight, eps))


@_rms_norm.register("cpu")
def _rms_norm_cpu(x, weight, eps, out):
    _native.cpu_module().rms_norm(view(out), view(x), view(weight), eps)


@_fused_add_rms_norm.register("reference")
def _fused_ref(x, residual, weight, eps):
    fused_add_rms_norm_reference(x, residual, weight, eps)


@_fused_add_rms_norm.register("cpu")
def _fused_cpu(x, residual, weight, eps):
    _native.cpu_module().fused_add_rms_norm(view(x), view(residual), view(weight), eps)


@_rms_norm.register("cuda")
def _rms_norm_cuda(x, weight, eps, out):
    _native.cuda_module().rms_norm(view(out), view(x), view(weight), eps)


@_fused_add_rms_norm.register("cuda")
def _fused_cuda(x, residual, weight, eps):
    _native.cuda_module().fused_add_rms_norm(view(x), view(residual), view(weight), eps)


_rms_norm.register_lazy("triton", "inference_pio.kernels.rms_norm:rms_norm")
_fused_add_rms_norm.register_lazy("triton", "inference_pio.kernels.rms_norm:fused_add_rms_norm")


# torch.compile sees these custom ops instead of the raw kernel calls.
@torch.library.custom_op("inference_pio::rms_norm", mutates_args=())
def _rms_norm_op(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return rms_norm(x, weight, eps)


@_rms_norm_op.register_fake
def _(x, weight, eps):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("inference_pio::fused_add_rms_norm", mutates_args=("x", "residual"))
def _fused_add_rms_norm_op(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> None:
    fused_add_rms_norm(x, residual, weight, eps)


@_fused_add_rms_norm_op.register_fake
def _(x, residual, weight, eps):
    return None
