"""``QuantizedTensor``: a 2-D weight stored as GGUF/ggml quantization blocks, never expanded.

Each row of the logical ``[rows, cols]`` matrix is ``cols / block_size`` consecutive blocks, so
``data`` is ``uint8 [rows, cols / block_size * type_size]``: exactly the bytes of the GGUF tensor
(ggml stores the fastest axis first, so a GGUF tensor of dims ``(cols, rows)`` is our
``[rows, cols]``). Kernels read these bytes directly; ``dequantize`` is the reference, done with
the ``gguf`` package's own dequantizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


class UnsupportedQuantizationError(ValueError):
    """A tensor uses a quantization type we cannot compute with (yet)."""


def _qtypes():
    from gguf import GGMLQuantizationType as Q

    return (Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q4_K, Q.Q5_K, Q.Q6_K)


#: The ggml quantization types our kernels compute with (gguf.GGMLQuantizationType members).
SUPPORTED_QTYPES = tuple(int(q) for q in _qtypes())


@dataclass(eq=False)
class QuantizedTensor:
    """``data``: uint8 ``[rows, row_bytes]`` contiguous blocks; ``qtype``: ggml type id; ``shape``: (rows, cols)."""

    data: torch.Tensor
    qtype: int
    shape: tuple[int, int]

    def __post_init__(self):
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        self.qtype = int(self.qtype)
        if self.qtype not in SUPPORTED_QTYPES:
            name = GGMLQuantizationType(self.qtype).name if self.qtype in GGMLQuantizationType._value2member_map_ \
                else str(self.qtype)
            supported = ", ".join(GGMLQuantizationType(q).name for q in SUPPORTED_QTYPES)
            raise UnsupportedQuantizationError(f"quantization type {name} is not supported (supported: {supported})")
        rows, cols = (int(s) for s in self.shape)
        self.shape = (rows, cols)
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(self.qtype)]
        if cols % block:
            raise ValueError(f"{self.qtype_name}: {cols} columns are not a multiple of the block size {block}")
        expected = (rows, cols // block * type_size)
        if self.data.dtype != torch.uint8 or tuple(self.data.shape) != expected:
            raise ValueError(f"{self.qtype_name} data for a {rows}x{cols} matrix must be uint8 {list(expected)}, "
                             f"got {self.data.dtype} {list(self.data.shape)}")
        if not self.data.is_contiguous():
            raise ValueError("quantized data must be contiguous")

    @property
    def qtype_name(self) -> str:
        from gguf import GGMLQuantizationType

        return GGMLQuantizationType(self.qtype).name

    @property
    def block_size(self) -> int:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        return GGML_QUANT_SIZES[GGMLQuantizationType(self.qtype)][0]

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def nbytes(self) -> int:
        return self.data.numel()

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float ``[rows, cols]`` matrix, through ``gguf.quants.dequantize`` (the reference)."""
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        values = dequantize(self.data.cpu().numpy(), GGMLQuantizationType(self.qtype))
        return torch.from_numpy(np.ascontiguousarray(values)).reshape(self.shape).to(dtype=dtype, device=self.device)

    @classmethod
    def quantize(cls, weight: torch.Tensor, qtype: int) -> "QuantizedTensor":
        """Quantizes a float ``[rows, cols]`` matrix with ``gguf.quants.quantize`` (tests, tools).

        The gguf package quantizes only some types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 among them); others raise.
        """
        from gguf import GGMLQuantizationType
        from gguf.quants import quantize

        if weight.dim() != 2:
            raise ValueError(f"weight must be 2-D, got shape {list(weight.shape)}")
        blocks = quantize(weight.detach().float().cpu().numpy(), GGMLQuantizationType(int(qtype)))
        return cls(torch.from_numpy(np.ascontiguousarray(blocks)).view(torch.uint8), qtype, tuple(weight.shape))

    def __repr__(self) -> str:
        return f"QuantizedTensor({self.qtype_name}, shape={list(self.shape)}, device={self.device})"
