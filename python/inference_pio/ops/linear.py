"""Dense linear: ``out [..., N] = x [..., K] @ weight[N, K].T (+ bias[N])``.

Layout: ``x`` has a contiguous last dimension and leading dimensions that merge into ``M`` rows
without a copy; ``weight`` is ``[N, K]`` contiguous; ``bias`` is ``[N]`` or None; all in x's dtype
(float32, float16 or bfloat16). Accumulation is float32 (float64 for the reference on float64
inputs); each output is rounded once.

Routing (why two implementations; the dispatcher decides, ``_dispatch.takes_torch_route``): batch-1
decode multiplies a handful of rows by a large weight, which is memory-bound; torch's bfloat16
matmul runs far below memory bandwidth there, so the CPU kernel (csrc/kernels/cpu/linear.cpp)
streams each weight row once for ``M <= _dispatch.LINEAR_KERNEL_MAX_ROWS`` rows. For more rows
(prefill) the work is compute-bound and torch's blocked GEMM is the right tool, so the op calls
torch's matmul itself, as it does for devices with no kernel here (CUDA). A forced backend
(``use_backend``/``INFERENCE_PIO_BACKEND``) bypasses the routing and runs every size, so the kernel
and the reference can be tested on any M.

Layers call ``LinearHandle(weight, bias)``, fetched once: the same results as ``linear`` with the
weight's validation and kernel view done once instead of per call.

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

# Rows up to which the CPU kernel beats torch's matmul (the dispatcher's value). It reads the weight
# once whatever M is, but its tiles reuse a weight vector across at most 4 rows, so past ~16 rows
# torch's GEMM (which blocks for cache reuse) catches up; prefill chunks are hundreds of rows.
SMALL_M_MAX = _dispatch.LINEAR_KERNEL_MAX_ROWS

_linear = _dispatch.op("linear")
_linear.set_torch_route(kernel_max_rows=SMALL_M_MAX)


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
    return _check_weight(weight, bias, x)


def _check_weight(weight: object, bias: object, x: torch.Tensor) -> tuple[int, int]:
    """Validates weight and bias against x (dtype, device, K); returns (K, N)."""
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


@_dispatch.traced_as_custom_op("linear")
def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``x [..., K] @ weight[N, K].T (+ bias[N])`` -> ``out [..., N]``.

    float32/float16/bfloat16, all arguments in x's dtype; ``out`` (contiguous, x's dtype) is written
    and returned (new unless given). CPU, ``M <= LINEAR_KERNEL_MAX_ROWS`` rows: the streaming kernel; otherwise
    torch's matmul (see the module docstring).
    """
    _, n = _check(x, weight, bias)
    out = check_out(out, (*x.shape[:-1], n), x)
    x2 = rows_2d("x", x)
    m = x2.shape[0]
    out2 = out if out.dim() == 2 else out.view(m, n)
    if _dispatch.takes_torch_route("linear", x.device, m):
        _torch_linear(x2, weight, bias, out2)
    else:
        _linear(x.device, x2, weight, bias, out2)
    return out


class LinearHandle:
    """``linear`` over one weight (and bias), resolved once: what ``layers.Linear`` calls per forward.

    ``handle(x, out=None)`` returns exactly what ``linear(x, weight, bias, out=out)`` does. While the
    dispatcher's automatic routing holds (``_dispatch.automatic()``) and x is ``[M, K]`` with
    ``M <= LINEAR_KERNEL_MAX_ROWS``, it calls the backend that routing picks for the weight's device
    when that is the CPU kernel, with the weight's view made once (the C++ kernel still checks x, out
    and their agreement with the weight, raising ValueError naming the argument). Every other call
    goes through ``linear`` itself. A weight whose data is replaced (``module.to(...)``) is seen by
    its data pointer and re-resolved; one replaced by another tensor needs a new handle.
    """

    __slots__ = ("weight", "bias", "out_features", "_kernel", "_views", "_pointers", "_max_rows")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        self.weight, self.bias = weight, bias
        self.out_features = weight.shape[0] if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None
        self._max_rows = _dispatch.op("linear").kernel_max_rows
        # Resolved on the first call the automatic route may give the kernel (never while tracing).
        self._kernel = self._views = self._pointers = None

    def _resolve(self) -> None:
        """The CPU kernel and the weight's views when the automatic route runs it; else no kernel."""
        w, b = self.weight, self.bias
        self._kernel, self._views = None, None
        self._pointers = (w.data_ptr(), None if b is None else b.data_ptr())
        # By name, not the module's _linear: tests replace that one.
        if w.dtype not in FLOAT_DTYPES or _dispatch.op("linear").automatic_backend(w.device) != "cpu":
            return
        try:
            _check_weight(w, b, w)
        except (TypeError, ValueError):
            return  # linear raises the clear error on the call
        self._kernel = _native.cpu_module().linear
        self._views = (view(w), optional_view(b))

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``x [M, K]`` (or ``[..., K]``) -> ``[M, N]``, written into ``out`` when given."""
        if x.dim() == 2 and x.shape[0] <= self._max_rows and _dispatch.automatic():
            b = self.bias
            if (self.weight.data_ptr(), None if b is None else b.data_ptr()) != self._pointers:
                self._resolve()
            if self._kernel is not None:
                if out is None:
                    out = torch.empty(x.shape[0], self.out_features, dtype=x.dtype)
                self._kernel(view(out), view(x), *self._views)
                return out
        return linear(x, self.weight, self.bias, out=out)


# Backends. Each takes validated tensors: x [M, K], weight [N, K], bias [N] or None, out [M, N].
@_linear.register("reference")
def _linear_ref(x, weight, bias, out):
    out.copy_(linear_reference(x, weight, bias))


@_linear.register("cpu")
def _linear_cpu(x, weight, bias, out):
    _native.cpu_module().linear(view(out), view(x), view(weight), optional_view(bias))
# No Triton or CUDA kernel: on GPUs the op routes to torch's matmul (cuBLAS) above.


# torch.compile sees this custom op instead of the raw kernel call.
@torch.library.custom_op("inference_pio::linear", mutates_args=())
def _linear_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return linear(x, weight, bias)


@_linear_op.register_fake
def _(x, weight, bias):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))
