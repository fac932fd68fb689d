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
def _rms_norm_kernel(x_ptr, w_ptr, out_ptr, x_row_stride, out_row_stride, hidden, eps,
                     BLOCK: tl.constexpr, ONE_PASS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_row_stride
    out_row = out_ptr + row * out_row_stride
    cols = tl.arange(0, BLOCK)
    if ONE_PASS:
        mask = cols < hidden
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.rsqrt(tl.sum(x * x, axis=0) / hidden + eps)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_row + cols, (x * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)
    else:
        sq = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, hidden, BLOCK):
            mask = start + cols < hidden
            x = tl.load(x_row + start + cols, mask=mask, other=0.0).to(tl.float32)
            sq += x * x
        rstd = tl.rsqrt(tl.sum(sq, axis=0) / hidden + eps)
        for start in range(0, hidden, BLOCK):
            mask = start + cols < hidden
            x = tl.load(x_row + start + cols, mask=mask, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + start + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(out_row + start + cols, (x * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _fused_add_rms_norm_kernel(x_ptr, res_ptr, w_ptr, x_row_stride, res_row_stride, hidden, eps,
                               BLOCK: tl.constexpr, ONE_PASS: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_row_stride
    res_row = res_ptr + row * res_row_stride
    cols = tl.arange(0, BLOCK)
    if ONE_PASS:
        mask = cols < hidden
        x = tl.load(x_row + cols, mask=mask, other=0.0).to(tl.float32)
        r = tl.load(res_row + cols, mask=mask, other=0.0).to(tl.float32)
        # The norm is taken of the residual as stored (rounded), like the reference.
        r = (r + x).to(res_ptr.dtype.element_ty)
        tl.store(res_row + cols, r, mask=mask)
        r = r.to(tl.float32)
        rstd = tl.rsqrt(tl.sum(r * r, axis=0) / hidden + eps)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(x_row + cols, (r * rstd * w).to(x_ptr.dtype.element_ty), mask=mask)
    else:
        sq = tl.zeros([BLOCK], dtype=tl.float32)
        for start in range(0, hidden, BLOCK):
            mask = start + cols < hidden
            x = tl.load(x_row + start + cols, mask=mask, other=0.0).to(tl.float32)
            r = tl.load(res_row + start + cols, mask=mask, other=0.0).to(tl.float32)
            r = (r + x).to(res_ptr.dtype.element_ty)
            tl.store(res_row + start + cols, r, mask=mask)
            r = r.to(tl.float32)
            sq += r * r
        rstd = tl.rsqrt(tl.sum(sq, axis=0) / hidden + eps)
        # Same block layout as the first loop: each thread re-reads the elements it stored.
        for start in range(0, hidden, BLOCK):
            mask = start + cols < hidden
            r = tl.load(res_row + start + cols, mask=mask, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + start + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(x_row + start + cols, (r * rstd * w).to(x_ptr.dtype.element_ty), mask=mask)


def launch_config(hidden: int) -> dict:
    """Constexprs and warps of both kernels for rows of ``hidden`` elements (also used by the compile tests)."""
    block = min(triton.next_power_of_2(hidden), MAX_BLOCK)
    return dict(BLOCK=block, ONE_PASS=hidden <= block, num_warps=row_warps(block))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, out: torch.Tensor) -> None:
    """``out [rows, hidden] = x * rsqrt(mean(x^2) + eps) * weight``; x [rows, hidden], weight [hidden]."""
    rows, hidden = x.shape
    if rows == 0 or hidden == 0:
        return
    _rms_norm_kernel[(rows,)](x, weight, out, x.stride(0), out.stride(0), hidden, eps, **launch_config(hidden))


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, eps: float) -> None:
    """In place on [rows, hidden]: ``residual = residual + x`` (rounded); ``x = rms_norm(residual)``."""
    rows, hidden = x.shape
    if rows == 0 or hidden == 0:
        return
    _fused_add_rms_norm_kernel[(rows,)](x, residual, weight, x.stride(0), residual.stride(0), hidden, eps,
                                        **launch_config(hidden))
