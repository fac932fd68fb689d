"""Argument validation at the op boundary: every message names the argument and what was expected."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int32, torch.int64)


def _names(dtypes: Iterable[torch.dtype]) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def check_tensor(
    name: str,
    t: object,
    *,
    ndim: int | tuple[int, ...] | None = None,
    dtypes: Iterable[torch.dtype] | None = None,
    device: torch.device | None = None,
    contiguous: bool = False,
    last_dim_contiguous: bool = False,
) -> torch.Tensor:
    """Checks one tensor argument and returns it; raises TypeError/ValueError naming ``name``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if t.dim() not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(t.shape)}")
    if dtypes is not None:
        dtypes = tuple(dtypes)
        if t.dtype not in dtypes:
            raise ValueError(f"{name} must have dtype {_names(dtypes)}, got {str(t.dtype).removeprefix('torch.')}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} must be on {device}, got {t.device}")
    if contiguous and not t.is_contiguous():
        raise ValueError(f"{name} must be contiguous (strides {t.stride()} for shape {tuple(t.shape)})")
    if last_dim_contiguous and t.dim() > 0 and t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(f"{name} must have a contiguous last dimension, got strides {t.stride()}")
    return t


def check_shape(name: str, t: torch.Tensor, expected: tuple[int | None, ...]) -> None:
    """``expected`` entries of None match any size."""
    shape = tuple(t.shape)
    if len(shape) != len(expected) or any(e is not None and e != s for e, s in zip(expected, shape)):
        want = "[" + ", ".join("*" if e is None else str(e) for e in expected) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(shape)}")


def check_same_dtype(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.dtype != ref.dtype:
        raise ValueError(f"{name} must have the same dtype as {ref_name} ({ref.dtype}), got {t.dtype}")


def check_same_device(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.device != ref.device:
        raise ValueError(f"{name} must be on the same device as {ref_name} ({ref.device}), got {t.device}")


def check_out(out: torch.Tensor | None, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Returns ``out`` after checking it, or a new tensor of ``shape`` shaped like ``like``."""
    if out is None:
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    check_tensor("out", out, dtypes=(like.dtype,), device=like.device, contiguous=True)
    check_shape("out", out, shape)
    return out


def rows_2d(name: str, t: torch.Tensor) -> torch.Tensor:
    """``t`` as [rows, last] without copying; raises if its leading dims cannot be merged."""
    if t.dim() == 2:
        return t
    try:
        return t.view(math.prod(t.shape[:-1]), t.shape[-1])  # explicit rows: -1 is ambiguous when empty
    except RuntimeError:
        raise ValueError(
            f"{name} has strides {t.stride()} for shape {tuple(t.shape)}: its leading dimensions cannot be "
            "merged into rows without a copy; pass a contiguous tensor"
        ) from None


def check_positive_int(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {value!r}")


def check_scale(scale: object, head_dim: int) -> float:
    if scale is None:
        return head_dim**-0.5
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"scale must be a positive float or None, got {scale!r}")
    return float(scale)


def check_no_aliasing(written: dict[str, torch.Tensor | None], read: dict[str, torch.Tensor | None]) -> None:
    """Arguments an op writes in place must not overlap themselves (stride-0 or overlapping rows), each
    other, or an argument it reads: backends write element by element in parallel, so an aliased
    output would get a result that depends on the order of writes (the reference would raise).
    Raises ValueError naming the arguments. ``None`` entries are skipped."""
    # Called on every op call: the common case (contiguous outputs, separate storages) stays cheap.
    outputs = [(n, t, t.untyped_storage().data_ptr()) for n, t in written.items() if t is not None]
    for name, t, _ in outputs:
        if not t.is_contiguous() and _overlaps_itself(t):
            raise ValueError(f"{name} has overlapping elements (shape {list(t.shape)}, strides {t.stride()}): an "
                             "argument written in place must not alias itself")
    others = outputs + [(n, t, t.untyped_storage().data_ptr()) for n, t in read.items() if t is not None]
    for i, (name, t, storage) in enumerate(outputs):
        for other_name, other, other_storage in others[i + 1:]:
            if storage == other_storage and t.device == other.device and _overlap_in_storage(t, other):
                raise ValueError(f"{name} and {other_name} share memory: an argument written in place must not "
                                 f"alias another argument")


def same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` and ``b`` are the same elements in the same layout (the same tensor, or two equal views)."""
    return (a.device == b.device and a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
            and a.dtype == b.dtype)


def _overlaps_itself(t: torch.Tensor) -> bool:
    """True when two indices of ``t`` reach one element. Exact for layouts where each dimension's
    stride covers the dimensions inside it (every layout the ops accept), conservative otherwise."""
    extent = 1
    for stride, size in sorted((abs(st), n) for n, st in zip(t.shape, t.stride()) if n > 1):
        if stride < extent:
            return True
        extent += stride * (size - 1)
    return False


def _rows(t: torch.Tensor) -> tuple[int, int, int, int]:
    """``t``'s bytes as ``(start, row_stride, rows, width)``: rows of ``width`` contiguous bytes; a
    layout that is not rows of one contiguous run is treated as one row spanning all its bytes."""
    item, shape, strides = t.element_size(), tuple(t.shape), t.stride()
    start = t.storage_offset() * item
    inner, width = len(shape), 1  # width in elements while walking the contiguous innermost dims
    while inner > 0 and (shape[inner - 1] == 1 or strides[inner - 1] == width):
        inner -= 1
        width *= shape[inner]
    lead = [(n, st) for n, st in zip(shape[:inner], strides[:inner]) if n > 1]
    if not lead:
        return start, 0, 1, width * item
    if len(lead) == 1 and lead[0][1] > 0:
        return start, lead[0][1] * item, lead[0][0], width * item
    span = (sum((n - 1) * abs(st) for n, st in zip(shape, strides)) + 1) * item
    low = start - sum((n - 1) * -st for n, st in zip(shape, strides) if st < 0) * item
    return low, 0, 1, span


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when ``a`` and ``b`` share an element (exact for row layouts, conservative otherwise)."""
    if a.device != b.device or a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False
    return _overlap_in_storage(a, b)


def _overlap_in_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``_overlap`` for two views of one storage."""
    if a.numel() == 0 or b.numel() == 0:
        return False
    a0, sa, ra, wa = _rows(a)
    b0, sb, rb, wb = _rows(b)
    if sa == sb and sa > 0:  # the same row pitch: rows i of a and j of b meet when some j - i works
        d = b0 - a0  # row j of b starts d + (j - i) * s after row i of a; they meet when -wb < that < wa
        low, high = (-wb - d) // sa + 1, -(-(wa - d) // sa) - 1
        return max(low, -(ra - 1)) <= min(high, rb - 1)
    a_end = a0 + (ra - 1) * sa + wa
    b_end = b0 + (rb - 1) * sb + wb
    return a0 < b_end and b0 < a_end
