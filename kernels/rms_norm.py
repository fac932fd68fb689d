"""RMSNorm and residual-add + RMSNorm (Triton): one program per row, float32 math.

Backend convention (see inference_pio.ops.rms_norm): ``rms_norm(x2d, weight, eps, out2d)`` and
``fused_add_rms_norm(x2d, residual2d, weight, eps)`` on validated 2-D tensors whose last dimension
is contiguous (rows may be strided). Rows up to MAX_BLOCK elements stay in registers (one read);
wider rows are processed in chunks (two reads).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import row_warps

MAX_BLOCK = 8192


@triton.jit
def _row_input(x_row, res_row, offs, mask, ADD_RESIDUAL: tl.constexpr):
    """The float32 values to normalize: x, or residual + x stored back to the residual first."""
    x = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
    if ADD_RESIDUAL:
        # The norm is taken of the residual as stored (rounded), like the reference.
        r = (tl.load(res_row + offs, mask=mask, other=0.0).to(tl.float32) + x).to(res_row.dtype.element_ty)
        tl.store(res_row + offs, r, mask=mask)
        x = r.to(tl.float32)
    return x


@triton.jit
def _rms_norm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, x_row_stride, res_row_stride, out_row_stride, hidden, eps,
                     ADD_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr, ONE_PASS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_row_stride
    res_row = res_ptr + row * res_row_stride
    out_row = out_ptr + row * out_row_stride
    cols = tl.arange(0, BLOCK)
    if ONE_PASS:
        mask = cols < hidden
        x = _row_input(x_row, res_row, cols, mask, ADD_RESIDUAL)
        rstd = tl.rsqrt(tl.sum(x * x, axis=0) / hidden + eps)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_row + cols, (x * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)
    else:
        sq = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, hidden, BLOCK):
            x = _row_input(x_row, res_row, start + cols, start + cols < hidden, ADD_RESIDUAL)
            sq += x * x
        rstd = tl.rsqrt(tl.sum(sq, axis=0) / hidden + eps)
        if ADD_RESIDUAL:
            src_row = res_row
        else:
            src_row = x_row
        # Same block layout as the first loop: each thread re-reads the residual elements it stored.
        for start in range(0, hidden, BLOCK):
            mask = start + cols < hidden
            x = tl.load(src_row + start + cols, mask=mask, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + start + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(out_row + start + cols, (x * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)


def launch_config(hidden: int) -> dict:
    """Constexprs and warps of the kernel for rows of ``hidden`` elements (also used by the compile tests)."""
    block = min(triton.next_power_of_2(hidden), MAX_BLOCK)
    return dict(BLOCK=block, ONE_PASS=hidden <= block, num_warps=row_warps(block))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, out: torch.Tensor) -> None:
    """``out [rows, hidden] = x * rsqrt(mean(x^2) + eps) * weight``; x [rows, hidden], weight [hidden]."""
    rows, hidden = x.shape
    if rows == 0 or hidden == 0:
        return
    # x doubles as the unused residual pointer (ADD_RESIDUAL=False never touches it).
    _rms_norm_kernel[(rows,)](x, x, weight, out, x.stride(0), 0, out.stride(0), hidden, eps, ADD_RESIDUAL=False,
                              **launch_config(hidden))


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> None:
    """In place on [rows, hidden]: ``residual = residual + x`` (rounded); ``x = rms_norm(residual)``."""
    rows, hidden = x.shape
    if rows == 0 or hidden == 0:
        return
    _rms_norm_kernel[(rows,)](x, residual, weight, x, x.stride(0), residual.stride(0), x.stride(0), hidden, eps,
                              ADD_RESIDUAL=True, **launch_config(hidden))
