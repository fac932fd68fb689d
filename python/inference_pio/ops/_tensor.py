"""Plain tensor views handed to the native kernels (see csrc/include/pio/tensor_view.h)."""

from __future__ import annotations

import torch

# Codes shared with pio::DType.
DTYPE_CODES = {
    torch.float32: 0,
    torch.float16: 1,
    torch.bfloat16: 2,
    torch.float64: 3,
    torch.int32: 4,
    torch.int64: 5,
    torch.uint8: 6,
    torch.int8: 7,
}


def view(t: torch.Tensor) -> tuple:
    """(data_ptr, dtype code, shape, strides, device type, device index, stream) for the bindings."""
    dev = t.device
    if dev.type == "cpu":
        return (t.data_ptr(), DTYPE_CODES[t.dtype], tuple(t.shape), t.stride(), 0, 0, 0)
    stream = torch.cuda.current_stream(dev).cuda_stream
    return (t.data_ptr(), DTYPE_CODES[t.dtype], tuple(t.shape), t.stride(), 1, dev.index or 0, stream)


def optional_view(t: torch.Tensor | None) -> tuple | None:
    return None if t is None else view(t)
