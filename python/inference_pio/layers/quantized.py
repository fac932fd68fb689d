"""Layers over ``QuantizedTensor`` weights: ``QuantizedLinear``, ``QuantizedEmbedding``, and
``swap_in_quantized`` which puts them in place of a model's dense ``Linear`` / ``nn.Embedding``.

STAND-IN: this first version computes through a dequantized float32 copy of the weight (made once,
on first use). The quantized-kernel work replaces the internals with kernels that read the blocks
directly; the interface below (constructors, ``forward`` signatures, ``swap_in_quantized``) stays.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..quant import QuantizedTensor


class QuantizedLinear(nn.Module):
    """``y [T, out] = x [T, in] @ W.T (+ bias)`` with ``W`` a ``QuantizedTensor [out, in]``.

    ``x`` may be float32 / bfloat16 / float16; the output has ``x``'s dtype.
    """

    def __init__(self, qweight: QuantizedTensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.qweight = qweight
        self.out_features, self.in_features = qweight.shape
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self._dense: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        if self._dense is None:
            self._dense = self.qweight.dequantize(torch.float32)
        y = F.linear(x.float(), self._dense, None if self.bias is None else self.bias.float()).to(x.dtype)
        if out is None:
            return y
        return out.copy_(y)

    def extra_repr(self) -> str:
        return f"{self.qweight.qtype_name}, in_features={self.in_features}, out_features={self.out_features}, " \
               f"bias={self.bias is not None}"


class QuantizedEmbedding(nn.Module):
    """Rows of a ``QuantizedTensor [vocab, hidden]`` table, dequantized to ``dtype``."""

    def __init__(self, qweight: QuantizedTensor, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.qweight = qweight
        self.num_embeddings, self.embedding_dim = qweight.shape
        self.dtype = dtype
        self._dense: torch.Tensor | None = None

    def forward(self, ids: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        if self._dense is None:
            self._dense = self.qweight.dequantize(torch.float32)
        y = self._dense.index_select(0, ids).to(self.dtype)
        if out is None:
            return y
        return out.copy_(y)

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
