"""Gated MLP activations (Triton): ``silu(x[:, :d]) * x[:, d:]`` and the GELU variant.

Backend convention (see inference_pio.ops.activation): ``silu_and_mul(x2d [rows, 2d], out2d [rows, d])``,
``gelu_and_mul(x2d, approximate, out2d)`` with approximate "none" (erf) or "tanh". Rows may be
strided; the last dimension is contiguous. Float32 math, one rounding at the store.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import unsupported

BLOCK = 1024

# Activation selectors (constexpr): one kernel body for every gate.
SILU, GELU_ERF, GELU_TANH = 0, 1, 2
_GELU = {"none": GELU_ERF, "tanh": GELU_TANH}


@triton.jit
def _gated_kernel(x_ptr, out_ptr, x_row_stride, out_row_stride, d, ACT: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < d
    gate = tl.load(x_ptr + row * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * x_row_stride + d + cols, mask=mask, other=0.0).to(tl.float32)
    if ACT == 0:
        act = gate * tl.sigmoid(gate)
    elif ACT == 1:
        act = 0.5 * gate * (1.0 + tl.erf(gate * 0.7071067811865476))
    else:
        # 0.5 * (1 + tanh(u)) == sigmoid(2u): no tanh needed, and no cancellation near 0.
        u = 0.7978845608028654 * (gate + 0.044715 * gate * gate * gate)
        act = gate * tl.sigmoid(2.0 * u)
    tl.store(out_ptr + row * out_row_stride + cols, (act * up).to(out_ptr.dtype.element_ty), mask=mask)


def launch_config(d: int) -> dict:
    """Block and warps for output rows of ``d`` elements (also used by the compile tests)."""
    return dict(BLOCK=min(BLOCK, triton.next_power_of_2(d)), num_warps=4)


def _launch(x: torch.Tensor, out: torch.Tensor, act: int) -> None:
    rows, d = out.shape
    if rows == 0 or d == 0:
        return
    config = launch_config(d)
    grid = (rows, triton.cdiv(d, config["BLOCK"]))
    _gated_kernel[grid](x, out, x.stride(0), out.stride(0), d, ACT=act, **config)


def silu_and_mul(x: torch.Tensor, out: torch.Tensor) -> None:
    """``out [rows, d] = silu(x[:, :d]) * x[:, d:]`` for x [rows, 2d]."""
    _launch(x, out, SILU)


def gelu_and_mul(x: torch.Tensor, approximate: str, out: torch.Tensor) -> None:
    """``out [rows, d] = gelu(x[:, :d], approximate) * x[:, d:]``; approximate is "none" or "tanh"."""
    if approximate not in _GELU:
        raise unsupported("gelu_and_mul", f"approximate must be 'none' or 'tanh', got {approximate!r}")
    _launch(x, out, _GELU[approximate])
