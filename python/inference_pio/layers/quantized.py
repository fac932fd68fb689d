"""Layers over ``QuantizedTensor`` weights: ``QuantizedLinear``, ``QuantizedEmbedding``, and
``swap_in_quantized`` which puts them in place of a model's dense ``Linear`` / ``nn.Embedding``.

On CPU they call the block kernels of ``ops.quantized_linear`` directly (the weight stays in its
GGUF blocks; no dense copy is ever kept; prefill-sized inputs go through dequantized tiles of a
few MB and torch's matmul, as the op routes them); elsewhere (GPUs, a forced ``reference`` backend,
``torch.compile`` tracing) they go through the op, whose reference dequantizes per call.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..ops import _dispatch
from ..ops._checks import FLOAT_DTYPES
from ..ops.quantized_linear import (
    SMALL_M_MAX, default_quantize_input, quantized_embedding, quantized_embedding_cpu_unchecked, quantized_linear,
    quantized_linear_cpu_unchecked, quantized_linear_through_tiles,
)
from ..quant import QuantizedTensor


def _cpu_kernel_allowed(device: torch.device) -> bool:
    return (device.type == "cpu" and not torch.compiler.is_compiling()
            and _dispatch.forced_backend() in (None, "cpu"))


class QuantizedLinear(nn.Module):
    """``y [T, out] = x [T, in] @ W.T (+ bias)`` with ``W`` a ``QuantizedTensor [out, in]``.

    ``x`` may be float32 / bfloat16 / float16; the output has ``x``'s dtype. How x meets the
    blocks (``quantize_input``: ``"int16"``, near-exact, the default; ``"int8"``, llama.cpp's
    scheme; ``"none"``, exact float products; see ``ops.quantized_linear``) follows
    ``INFERENCE_PIO_QUANTIZE_INPUT`` when the layer is built and may be set on the attribute.
    """

    def __init__(self, qweight: QuantizedTensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.qweight = qweight
        self.out_features, self.in_features = qweight.shape
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.quantize_input = default_quantize_input()
        self._bias_as: dict[torch.dtype, torch.Tensor] = {}  # the bias in each input dtype met

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``x [T, in]`` (or ``[..., in]``) -> ``[T, out]``, written into ``out`` when given (no allocation)."""
        bias = self._bias_for(x.dtype)
        if x.dim() == 2 and x.dtype in FLOAT_DTYPES and _cpu_kernel_allowed(x.device):
            if out is None:
                out = torch.empty(x.shape[0], self.out_features, dtype=x.dtype)
            # Routing only; the C++ kernels check shapes, strides and dtypes themselves.
            if x.shape[0] <= SMALL_M_MAX or _dispatch.forced_backend() == "cpu":
                quantized_linear_cpu_unchecked(x, self.qweight, bias, out, self.quantize_input)
            else:  # prefill: dequantized tiles and torch's matmul (see ops.quantized_linear)
                quantized_linear_through_tiles(x, self.qweight, bias, out)
            return out
        return quantized_linear(x, self.qweight, bias, out=out, quantize_input=self.quantize_input)

    def _bias_for(self, dtype: torch.dtype) -> torch.Tensor | None:
        if self.bias is None or self.bias.dtype == dtype:
            return self.bias
        cached = self._bias_as.get(dtype)
        if cached is None or cached.device != self.bias.device:
            cached = self._bias_as[dtype] = self.bias.detach().to(dtype)
        return cached

    def extra_repr(self) -> str:
        return f"{self.qweight.qtype_name}, in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}, quantize_input={self.quantize_input}"


class QuantizedEmbedding(nn.Module):
    """Rows of a ``QuantizedTensor [vocab, hidden]`` table, dequantized to ``dtype``."""

    def __init__(self, qweight: QuantizedTensor, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.qweight = qweight
        self.num_embeddings, self.embedding_dim = qweight.shape
        self.dtype = dtype

    def forward(self, ids: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``ids [T]`` -> ``[T, hidden]`` in ``self.dtype`` (out's dtype when given); ids out of range raise."""
        if ids.dim() == 1 and _cpu_kernel_allowed(ids.device):
            if out is None:
                out = torch.empty(ids.shape[0], self.embedding_dim, dtype=self.dtype)
            quantized_embedding_cpu_unchecked(ids, self.qweight, out)
            return out
        return quantized_embedding(ids, self.qweight, self.dtype, out=out)

    def extra_repr(self) -> str:
        return f"{self.qweight.qtype_name}, {self.num_embeddings}, {self.embedding_dim}"


def swap_in_quantized(model: nn.Module, state: dict) -> list[str]:
    """Replaces, for every ``"<module path>.weight"`` in ``state`` holding a ``QuantizedTensor``, the
    module at that path (a ``Linear``-like module or ``nn.Embedding``) with its quantized layer.

    A ``"<module path>.bias"`` dense tensor moves into the ``QuantizedLinear``. Consumed keys are
    removed from ``state`` (the rest goes to ``load_state_dict`` as before). Returns the swapped paths.
    """
    swapped = []
    for key in [k for k, v in state.items() if isinstance(v, QuantizedTensor)]:
        if not key.endswith(".weight"):
            raise ValueError(f"quantized tensor {key!r} is not a module weight")
        path = key[: -len(".weight")]
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        old = getattr(parent, name)
        qweight = state.pop(key)
        if isinstance(old, nn.Embedding):
            new = QuantizedEmbedding(qweight, old.weight.dtype)
            expected = (old.num_embeddings, old.embedding_dim)
        else:
            bias = state.pop(path + ".bias", None)
            new = QuantizedLinear(qweight, bias)
            expected = (old.out_features, old.in_features)
        if tuple(qweight.shape) != expected:
            raise ValueError(f"{key}: quantized shape {list(qweight.shape)} does not fit {list(expected)}")
        setattr(parent, name, new)
        swapped.append(path)
    return swapped
