"""Reading a slice of a GGUF tensor (some rows, or some columns) without reading the rest.

Tensor parallelism gives each rank a share of every matrix: whole rows of a column-parallel
projection (qkv, gate_up, the vocabulary of embedding and head), whole columns of a row-parallel
one (o, down). In a quantized GGUF matrix a row is a whole number of blocks, so a row slice is a
byte slice. A column slice cuts every row: it is a byte slice too when it starts and ends on a
block boundary (32 elements, 256 for K-quants), and cannot be taken otherwise without
dequantizing; that is refused, naming the tensor and the sizes.

Llama-architecture files store Q and K rows permuted per head (see ``gguf_loader``). The
permutation never leaves a head, so a slice of whole heads is un-permuted on its own, with its
own head count.
"""

from __future__ import annotations

import numpy as np
import torch

from ..quant import SUPPORTED_QTYPES, QuantizedTensor
from .errors import WeightLoadError
from .gguf_file import GGUFFile, GGUFTensor
from .gguf_loader import hf_tensor_name, unpermute_qk_rows

# ggml type id -> numpy dtype of the dense types (BF16 travels as uint16 bits: numpy has no bfloat16).
_DENSE = {0: np.float32, 1: np.float16, 30: np.uint16}
_BF16 = 30


class ColumnSliceError(WeightLoadError):
    """A column slice that would cut quantization blocks; ``block``: their size in elements."""

    def __init__(self, message: str, block: int):
        super().__init__(message)
        self.block = block


class GGUFSlices:
    """One GGUF file's tensors under transformers' names, read slice by slice.

    ``read(name, shape, rows=..., cols=..., heads=...)`` returns a dense tensor in ``dtype`` (F32,
    F16, BF16 tensors) or a ``QuantizedTensor`` (its blocks, copied out of the memory map).
    """

    def __init__(self, gguf: GGUFFile, dtype: torch.dtype, device: str | torch.device = "cpu"):
        self.gguf, self.dtype, self.device = gguf, dtype, device
        self.tensors: dict[str, GGUFTensor] = {}
        unknown = []
        for tensor in gguf.tensors:
            hf = hf_tensor_name(tensor.name)
            if hf is None:
                unknown.append(tensor.name)
            else:
                self.tensors[hf] = tensor
        if unknown:
            raise WeightLoadError(f"{gguf.path}: tensors with no place in a Llama-family model: "
                                  f"{', '.join(unknown[:20])}")

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def read(self, name: str, shape: tuple[int, ...], rows: tuple[int, int] | None = None,
             cols: tuple[int, int] | None = None, heads: int | None = None) -> torch.Tensor | QuantizedTensor:
        """Rows ``[start, start + count)`` (``rows``) or columns (``cols``) of tensor ``name``, whose full
        shape must be ``shape``; ``heads``: how many Q/K heads the rows hold, to undo their permutation."""
        tensor = self._tensor(name, shape)
        where = f"{self.gguf.path}: tensor {tensor.name} ({_type_name(tensor.ggml_type)}, shape {list(tensor.shape)})"
        if rows is not None and not (0 <= rows[0] and rows[0] + rows[1] <= tensor.shape[0]):
            raise WeightLoadError(f"{where}: rows {rows[0]}..{rows[0] + rows[1]} are out of range")
        block = _block_elements(tensor.ggml_type)
        cells = self.gguf.data(tensor).reshape(tensor.shape[0], -1)  # bytes of each row (each element if 1-D)
        if rows is not None:
            cells = cells[rows[0]:rows[0] + rows[1]]
        logical_cols = tensor.shape[-1]
        if cols is not None:
            start, count = cols
            if len(tensor.shape) != 2 or not (0 <= start and start + count <= logical_cols):
                raise WeightLoadError(f"{where}: columns {start}..{start + count} are out of range")
            if start % block or count % block:
                raise ColumnSliceError(f"{where}: columns {start}..{start + count} ({count} of {logical_cols}) cut "
                                       f"{_type_name(tensor.ggml_type)}'s {block}-element blocks", block)
            per_block = cells.shape[-1] // (logical_cols // block)  # bytes
            cells = cells[..., start // block * per_block:(start + count) // block * per_block]
            logical_cols = count
        if heads is not None:
            try:
                cells = unpermute_qk_rows(cells, heads)
            except ValueError as e:
                raise WeightLoadError(f"{where}: {e}") from None
        copied = np.array(cells, order="C")  # always a copy: the map stays read-only, the rest unread
        if tensor.ggml_type in _DENSE:
            values = torch.from_numpy(copied.view(_DENSE[tensor.ggml_type]))
            values = values.reshape(-1) if len(tensor.shape) == 1 else values
            if tensor.ggml_type == _BF16:
                values = values.view(torch.bfloat16)
            return values.to(device=self.device, dtype=self.dtype)
        return QuantizedTensor(torch.from_numpy(copied).to(self.device), tensor.ggml_type,
                               (copied.shape[0], logical_cols))

    def _tensor(self, name: str, shape: tuple[int, ...]) -> GGUFTensor:
        tensor = self.tensors.get(name)
        if tensor is None:
            raise WeightLoadError(f"{self.gguf.path}: no tensor for {name} in the GGUF file")
        if tuple(tensor.shape) != tuple(shape):
            raise WeightLoadError(f"{self.gguf.path}: tensor {tensor.name} has shape {list(tensor.shape)}, the model "
                                  f"needs {list(shape)}")
        if tensor.ggml_type not in _DENSE and tensor.ggml_type not in SUPPORTED_QTYPES:
            raise WeightLoadError(f"{self.gguf.path}: tensor {tensor.name} is {_type_name(tensor.ggml_type)}, a type "
                                  "inference-pio cannot compute with")
        if len(tensor.shape) > 2 or (tensor.ggml_type not in _DENSE and len(tensor.shape) != 2):
            raise WeightLoadError(f"{self.gguf.path}: tensor {tensor.name} has shape {list(tensor.shape)}: "
                                  f"{'a matrix' if tensor.ggml_type not in _DENSE else 'a vector or a matrix'} is expected")
        return tensor


def _block_elements(ggml_type: int) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)][0]


def _type_name(ggml_type: int) -> str:
    from gguf import GGMLQuantizationType

    return GGMLQuantizationType(ggml_type).name
