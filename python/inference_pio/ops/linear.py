"""Dense linear: ``out [..., N] = x [..., K] @ weight[N, K].T (+ bias[N])``.

Layout: ``x`` has a contiguous last dimension and leading dimensions that merge into ``M`` rows
without a copy; ``weight`` is ``[N, K]`` contiguous; ``bias`` is ``[N]`` or None; all in x's dtype
(float32, float16 or bfloat16). Accumulation is float32 (float64 for the reference on float64
inputs); each output is rounded once.

Routing (why two implementations): batch-1 decode multiplies a handful of rows by a large weight,
which is memory-bound; torch's bfloat16 matmul runs far below memory bandwidth there, so the CPU
kernel (csrc/kernels/cpu/linear.cpp) streams each weight row once for ``M <= SMALL_M_MAX`` rows.
For more rows (prefill) the work is compute-bound and torch's blocked GEMM is the right tool, so
the op calls torch's matmul itself, as it does for devices with no kernel here (CUDA). A forced
backend (``use_backend``/``INFERENCE_PIO_BACKEND``) bypasses the routing and runs every size, so
the kernel and the reference can be tested on any M.

Backend call convention: ``linear: impl(x2d, weight, bias_or_None, out2d)`` with ``x2d [M, K]``,
``out2d [M, N]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _dispatch
from ._checks import FLOAT_DTYPES, check_out, check_same_device, check_same_dtype, check_tensor, rows_2d
from ._tensor import optional_view, view
from .. import _native

# Rows up to which the CPU kernel beats torch's matmul. It reads the weight once whatever M is,
# but its tiles reuse a weight vector across at most 4 rows, so past ~16 rows torch's GEMM
# (which blocks for cache reuse) catches up; prefill chunks are hundreds of rows.
SMALL_M_MAX = 16

_linear = _dispatch.op("linear")


def linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The specification: ``x @ weight.T (+ bias)`` in float32 (float64 for float64), rounded once to x's dtype."""
    acc = torch.promote_types(x.dtype, torch.float32)
    y = x.to(acc) @ weight.to(acc).T
    if bias is not None:
        y = y + bias.to(acc)
    return y.to(x.dtype)


def _check(x: object, weight: object, bias: object) -> tuple[int, int]:
    """Validates the arguments; returns (K, N)."""
    check_tensor("x", x, dtypes=FLOAT_DTYPES, last_dim_contiguous=True)
    if x.dim() == 0:
        raise ValueError("x must have at least 1 dimension [..., K], got a scalar")
    check_tensor("weight", weight, ndim=2)
    check_same_dtype("weight", weight, "x", x)
    check_same_device("weight", weight, "x", x)
    k = x.shape[-1]
    if weight.shape[1] != k:
        raise ValueError(
            f"weight must have shape [N, K] with K = x.shape[-1] = {k}, got {list(weight.shape)} "
            f"(x has shape {list(x.shape)})"
        )
    if not weight.is_contiguous():
        raise ValueError(f"weight must be contiguous, got strides {weight.stride()} for shape {list(weight.shape)}")
    n = weight.shape[0]
    if bias is not None:
        check_tensor("bias", bias, ndim=1)
        check_same_dtype("bias", bias, "x", x)
        check_same_device("bias", bias, "x", x)
        if bias.shape[0] != n:
            raise ValueError(f"bias must have shape [N] = [{n}] (weight's rows), got {list(bias.shape)}")
        if not bias.is_contiguous():
            raise ValueError(f"bias must be contiguous, got strides {bias.stride()}")
    return k, n


def _torch_linear(x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out2: torch.Tensor) -> None:
    """torch's matmul into ``out2`` (no extra allocation): the large-M and non-CPU route."""
    if bias is None:
        torch.mm(x2, weight.t(), out=out2)
    else:
        torch.addmm(bias, x2, weight.t(), out=out2)


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``x [..., K] @ weight[N, K].T (+ bias[N])`` -> ``out [..., N]``.

    float32/float16/bfloat16, all arguments in x's dtype; ``out`` (contiguous, x's dtype) is written
    and returned (new unless given). CPU, ``M <= SMALL_M_MAX`` rows: the streaming kernel; otherwise
    torch's matmul (see the module docstring).
    """
    if torch.compiler.is_compiling():
        return torch.ops.inference_pio.linear(x, weight, bias)
    _, n = _check(x, weight, bias)
    out = check_out(out, (*x.shape[:-1], n), x)
    x2 = rows_2d("x", x)
    m = x2.shape[0]
    out2 = out if out.dim() == 2 else out.view(m, n)
    if _dispatch.forced_backend() is None and (m > SMALL_M_MAX or x.device.type != "cpu"):
        _torch_linear(x2, weight, bias, out2)
    else:
        _linear(x.device, x2, weight, bias, out2)
    return out


def linear_cpu_unchecked(x2: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out2: torch.Tensor) -> None:
    """The CPU kernel without the Python-side validation, for the model's hot loop (layers.Linear).

    Callers pass 2-D ``x2 [M, K]`` and ``out2 [M, N]``; the C++ kernel still checks every
    shape, dtype and stride and raises ValueError naming the argument.
    """
    _native.cpu_module().linear(view(out2), view(x2), view(weight), optional_view(bias))


# Backends. Each takes validated tensors: x [M, K], weight [N, K], bias [N] or None, out [M, N].
@_linear.register("reference")
def _linear_ref(x, weight, bias, out):
    out.copy_(linear_reference(x, weight, bias))


_linear.register("cpu", linear_cpu_unchecked)
# No Triton or CUDA kernel: on GPUs the op routes to torch's matmul (cuBLAS) above.


# torch.compile sees this custom op instead of the raw kernel call.
@torch.library.custom_op("inference_pio::linear", mutates_args=())
def _linear_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return linear(x, weight, bias)


@_linear_op.register_fake
def _(x, weight, bias):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))
