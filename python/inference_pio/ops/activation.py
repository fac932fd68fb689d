"""Gated MLP activations: ``silu_and_mul`` (SwiGLU: Llama, Mistral, Qwen2) and ``gelu_and_mul``
(GeGLU: Gemma).

Layout: ``x`` is ``[..., 2*d]``, the gate projection in ``x[..., :d]`` and the up projection in
``x[..., d:]`` (a fused gate+up matmul's output), with a contiguous last dimension; leading
dimensions must merge into rows without a copy. ``out`` is ``[..., d]`` in x's dtype
(float32, float16 or bfloat16). The math is float32 (float64 for the references on float64
inputs); the output is rounded once.

Backend call convention (shared by every backend): ``silu_and_mul: impl(x2d, out2d)``,
``gelu_and_mul: impl(x2d, approximate, out2d)`` with ``x2d [rows, 2*d]`` and ``out2d [rows, d]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _dispatch
from ._checks import FLOAT_DTYPES, check_out, check_tensor, rows_2d
from ._tensor import view
from .. import _native

GELU_APPROXIMATIONS = ("none", "tanh")

_silu_and_mul = _dispatch.op("silu_and_mul")
_gelu_and_mul = _dispatch.op("gelu_and_mul")


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gate, up) of ``x [..., 2*d]`` in float32 (or wider for float64 inputs)."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    d = x.shape[-1] // 2
    return xf[..., :d], xf[..., d:]


def silu_and_mul_reference(x: torch.Tensor) -> torch.Tensor:
    """The specification: ``silu(x[..., :d]) * x[..., d:]`` in float32 (or wider), rounded once."""
    gate, up = _halves(x)
    return (F.silu(gate) * up).to(x.dtype)


def gelu_and_mul_reference(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    """The specification: ``gelu(x[..., :d], approximate) * x[..., d:]`` in float32 (or wider), rounded once."""
    gate, up = _halves(x)
    return (F.gelu(gate, approximate=approximate) * up).to(x.dtype)


def _check_x(x: object) -> int:
    """Validates x ``[..., 2*d]``; returns d."""
    check_tensor("x", x, dtypes=FLOAT_DTYPES, last_dim_contiguous=True)
    if x.dim() == 0:
        raise ValueError("x must have at least 1 dimension [..., 2*d], got a scalar")
    width = x.shape[-1]
    if width == 0 or width % 2:
        raise ValueError(
            f"x's last dimension must be a positive even size 2*d (gate and up halves), got shape {list(x.shape)}"
        )
    return width // 2


def _check_approximate(approximate: object) -> str:
    if not isinstance(approximate, str) or approximate not in GELU_APPROXIMATIONS:
        raise ValueError(f"approximate must be one of {', '.join(map(repr, GELU_APPROXIMATIONS))}, got {approximate!r}")
    return approximate


def _prepare(x: torch.Tensor, out: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x2d [rows, 2*d], out [..., d], out2d [rows, d]) after validation; allocates out if None."""
    d = _check_x(x)
    out = check_out(out, (*x.shape[:-1], d), x)
    x2 = rows_2d("x", x)
    return x2, out, out if out.dim() == 2 else out.view(x2.shape[0], d)


@_dispatch.traced_as_custom_op("silu_and_mul")
def silu_and_mul(x: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """SwiGLU activation: ``x [..., 2*d]`` -> ``out [..., d] = silu(x[..., :d]) * x[..., d:]``.

    float32/float16/bfloat16; ``out`` (contiguous, x's dtype) is written and returned (new unless given).
    """
    x2, out, out2 = _prepare(x, out)
    _silu_and_mul(x.device, x2, out2)
    return out


@_dispatch.traced_as_custom_op("gelu_and_mul")
def gelu_and_mul(x: torch.Tensor, approximate: str = "none", *, out: torch.Tensor | None = None) -> torch.Tensor:
    """GeGLU activation: ``x [..., 2*d]`` -> ``out [..., d] = gelu(x[..., :d]) * x[..., d:]``.

    ``approximate``: "none" (exact, erf) or "tanh" (as ``torch.nn.functional.gelu``).
    float32/float16/bfloat16; ``out`` (contiguous, x's dtype) is written and returned (new unless given).
    """
    approximate = _check_approximate(approximate)
    x2, out, out2 = _prepare(x, out)
    _gelu_and_mul(x.device, x2, approximate, out2)
    return out


# Backends. Each takes validated 2-D tensors: x [rows, 2*d], out [rows, d].
@_silu_and_mul.register("reference")
def _silu_and_mul_ref(x, out):
    out.copy_(silu_and_mul_reference(x))


@_silu_and_mul.register("cpu")
def _silu_and_mul_cpu(x, out):
    _native.cpu_module().silu_and_mul(view(out), view(x))


@_gelu_and_mul.register("reference")
def _gelu_and_mul_ref(x, approximate, out):
    out.copy_(gelu_and_mul_reference(x, approximate))


@_gelu_and_mul.register("cpu")
def _gelu_and_mul_cpu(x, approximate, out):
    _native.cpu_module().gelu_and_mul(view(out), view(x), approximate)


@_silu_and_mul.register("cuda")
def _silu_and_mul_cuda(x, out):
    _native.cuda_module().silu_and_mul(view(out), view(x))


@_gelu_and_mul.register("cuda")
def _gelu_and_mul_cuda(x, approximate, out):
    _native.cuda_module().gelu_and_mul(view(out), view(x), approximate)


_silu_and_mul.register_lazy("triton", "inference_pio.kernels.activation:silu_and_mul")
_gelu_and_mul.register_lazy("triton", "inference_pio.kernels.activation:gelu_and_mul")


# torch.compile sees these custom ops instead of the raw kernel calls.
def _fake_out(x: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], x.shape[-1] // 2))


@torch.library.custom_op("inference_pio::silu_and_mul", mutates_args=())
def _silu_and_mul_op(x: torch.Tensor) -> torch.Tensor:
    return silu_and_mul(x)


@_silu_and_mul_op.register_fake
def _(x):
    return _fake_out(x)


@torch.library.custom_op("inference_pio::gelu_and_mul", mutates_args=())
def _gelu_and_mul_op(x: torch.Tensor, approximate: str) -> torch.Tensor:
    return gelu_and_mul(x, approximate)


@_gelu_and_mul_op.register_fake
def _(x, approximate):
    return _fake_out(x)
