"""Launch helpers shared by the Triton kernels: argument checks a backend adds on top of the op's
validation, block-size choice, and the interpreter switch.

Kernels run on CUDA tensors, or on CPU tensors when ``TRITON_INTERPRET=1`` was set before import.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from inference_pio.errors import BackendUnsupported

# Head dims are padded to the next power of two inside the attention kernels; above this the
# tiles no longer fit in registers/shared memory of one program.
MAX_HEAD_DIM = 256


def interpreted() -> bool:
    """True when kernels run through Triton's CPU interpreter (keep blocks small, one config)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


def for_interpreter(interpret: bool | None) -> bool:
    """Launch-config choosers take ``interpret`` so the compile tests can ask for the GPU config."""
    return interpreted() if interpret is None else interpret


def unsupported(op: str, reason: str) -> BackendUnsupported:
    return BackendUnsupported(f"{op} (triton): {reason}")


def check_head_dim(op: str, head_dim: int) -> int:
    """The padded block for ``head_dim`` (at least 16: tl.dot needs K >= 16)."""
    if head_dim > MAX_HEAD_DIM:
        raise unsupported(op, f"head dim {head_dim} > {MAX_HEAD_DIM} is not supported")
    return max(16, triton.next_power_of_2(head_dim))


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs must not silently drop to TF32 (10-bit mantissa) inside tl.dot."""
    return "ieee" if dtype == torch.float32 else "tf32"


def row_warps(block: int) -> int:
    """Warps for a one-row-per-program kernel over ``block`` elements (~8 elements per thread)."""
    return max(1, min(16, block // 256))


@triton.jit
def safe_max(m):
    """Rows whose every score is masked have max -inf; subtracting 0 instead keeps exp() at 0, not NaN."""
    return tl.where(m == float("-inf"), 0.0, m)


@triton.jit
def softmax_start(ROWS: tl.constexpr, BLOCK_D: tl.constexpr):
    """Empty online-softmax state: running max -inf, sum 0, float32 accumulator [ROWS, BLOCK_D]."""
    m = tl.full([ROWS], float("-inf"), dtype=tl.float32)
    return m, tl.zeros([ROWS], dtype=tl.float32), tl.zeros([ROWS, BLOCK_D], dtype=tl.float32)


@triton.jit
def online_softmax_step(s, v, m, l, acc, DOT_PRECISION: tl.constexpr):
    """One FlashAttention step: folds scores ``s [M, N]`` (log2 domain, -inf where masked) and
    values ``v [N, D]`` into the running max ``m [M]``, sum ``l [M]`` and float32 ``acc [M, D]``."""
    m_new = tl.maximum(m, tl.max(s, 1))
    m_safe = safe_max(m_new)
    p = tl.exp2(s - m_safe[:, None])
    alpha = tl.exp2(m - m_safe)
    l = l * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return m_new, l, acc


@triton.jit
def load_kv_tile(k_ptr, v_ptr, k_tok, v_tok, j_mask, d, head_dim):
    """K transposed [D, N] and V [N, D] of the tokens at element offsets ``k_tok``/``v_tok [N]``
    (head included); masked tokens and padded dims read as zeros."""
    d_mask = d < head_dim
    kt = tl.load(k_ptr + k_tok[None, :] + d[:, None], mask=j_mask[None, :] & d_mask[:, None], other=0.0)
    v = tl.load(v_ptr + v_tok[:, None] + d[None, :], mask=j_mask[:, None] & d_mask[None, :], other=0.0)
    return kt, v


@triton.jit
def normalized(acc, l):
    """``acc / l`` per row; rows that saw no key (l == 0) give zeros instead of NaN."""
    return acc / tl.where(l > 0.0, l, 1.0)[:, None]


LOG2E = 1.4426950408889634  # scores are scaled into the log2 domain so the kernels can use exp2
