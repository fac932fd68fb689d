"""Quantized weights kept in their GGUF block layout (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)."""

from .tensor import SUPPORTED_QTYPES, QuantizedTensor, UnsupportedQuantizationError

__all__ = ["QuantizedTensor", "SUPPORTED_QTYPES", "UnsupportedQuantizationError"]
