"""Layers over ``QuantizedTensor`` weights: ``QuantizedLinear``, ``QuantizedEmbedding``, and
``swap_in_quantized`` which puts them in place of a model's dense ``Linear`` / ``nn.Embedding``.

Routing is the ops' (the dispatcher's): on CPU the block kernels of ``ops.quantized_linear`` (the
weight stays in its GGUF blocks; no dense copy is ever kept; prefill-sized inputs go through
dequantized tiles of a few MB and torch's matmul); on GPUs, under a forced ``reference`` backend or
``torch.compile`` tracing, the op's other routes. Each layer calls the op's handle, fetched once.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..ops.quantized_linear import QuantizedEmbeddingHandle, QuantizedLinearHandle, default_quantize_input
from ..quant import QuantizedTensor


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
        # One handle per input dtype met (the bias goes to the kernel in x's dtype), all for the
        # (qweight, bias, its data pointer, quantize_input) in _bound_to; a change rebuilds them.
        self._handles: dict[torch.dtype, QuantizedLinearHandle] = {}
        self._bound_to: tuple = (None, None, None, None)

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``x [T, in]`` (or ``[..., in]``) -> ``[T, out]``, written into ``out`` when given (no allocation)."""
        bias = self._parameters.get("bias")  # not self.bias: nn.Module's lookup costs more than the check
        qweight, mode, bound = self.qweight, self.quantize_input, self._bound_to
        if (bound[0] is not qweight or bound[1] is not bias or bound[3] != mode
                or (bias is not None and bias.data_ptr() != bound[2])):
            self._handles, self._bound_to = {}, (qweight, bias, None if bias is None else bias.data_ptr(), mode)
        handle = self._handles.get(x.dtype)
        if handle is None:
            as_x = None if bias is None or bias.dtype == x.dtype else bias.detach().to(x.dtype)
            handle = self._handles[x.dtype] = QuantizedLinearHandle(qweight, bias if as_x is None else as_x, mode)
        return handle(x, out)

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
        self._handle: QuantizedEmbeddingHandle | None = None

    def forward(self, ids: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``ids [T]`` -> ``[T, hidden]`` in ``self.dtype`` (out's dtype when given); ids out of range raise."""
        handle = self._handle
        if handle is None or handle.qweight is not self.qweight:
            handle = self._handle = QuantizedEmbeddingHandle(self.qweight)
        return handle(ids, self.dtype, out)

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
