"""Tensors of a Llama-family GGUF file under transformers' names, quantized ones kept in blocks.

GGUF names (llama.cpp's) map to transformers' (``blk.3.attn_q.weight`` ->
``model.layers.3.self_attn.q_proj.weight``); ``output.weight`` absent means the embedding is tied.
Quantized tensors (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) become ``QuantizedTensor`` (their bytes, never
expanded); F32 / F16 / BF16 tensors become dense torch tensors in the requested dtype.

Llama-architecture converters permute the rows of Q and K (``convert_hf_to_gguf.py``'s ``permute``:
within each head the two rotary halves are interleaved, for llama.cpp's GPT-J style RoPE). We use
NeoX-style RoPE like transformers, so ``qk_heads`` undoes that permutation. It moves whole rows, so
quantized Q/K are un-permuted block row by block row, exactly.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from ..quant import SUPPORTED_QTYPES, QuantizedTensor
from .errors import WeightLoadError
from .fusion import EMBED_NAME, LM_HEAD_NAME, fuse_into, tie_embeddings
from .gguf_file import GGUFTensor, open_gguf
from .safetensors_loader import _check_expected, _name_list

_TOP_LEVEL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_PER_LAYER = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_LAYER_NAME = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|bias)$")
_DENSE_TYPES = {0: "F32", 1: "F16", 30: "BF16"}  # ggml type ids stored as plain values
_DENSE_NUMPY = {0: np.float32, 1: np.float16, 30: np.uint16}


def hf_tensor_name(gguf_name: str) -> str | None:
    """transformers' name for a Llama-family GGUF tensor name; ``None`` when there is none."""
    match = _LAYER_NAME.match(gguf_name)
    if match:
        layer, part, kind = match.groups()
        return f"model.layers.{layer}.{_PER_LAYER[part]}.{kind}" if part in _PER_LAYER else None
    stem, _, kind = gguf_name.rpartition(".")
    return f"{_TOP_LEVEL[stem]}.{kind}" if stem in _TOP_LEVEL and kind in ("weight", "bias") else None


def unpermute_qk_rows(rows: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo the converters' Q/K row permutation on ``rows [num_heads * head_dim, ...]`` (any dtype:
    float values or uint8 block rows). Per head, row ``2*i + j`` goes back to ``j*head_dim/2 + i``."""
    if rows.shape[0] % (2 * num_heads):
        raise ValueError(f"{rows.shape[0]} rows cannot be split into {num_heads} heads of two rotary halves")
    half = rows.shape[0] // num_heads // 2
    return rows.reshape(num_heads, half, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def load_gguf_state(source, expected: dict[str, tuple[int, ...]] | None = None, *,
                    dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                    qk_heads: tuple[int, int] | None = None,
                    tie_word_embeddings: bool = False) -> dict[str, torch.Tensor | QuantizedTensor]:
    """Every tensor of a Llama-family GGUF, named like transformers' checkpoint.

    Args:
        source: a path or an opened ``GGUFFile`` (``open_gguf``).
        expected: ``{hf_name: shape}`` the model needs; names and shapes are checked against it
            before any tensor data is read (missing, unexpected, wrong shape: one error for all).
        dtype: dtype of dense (F32/F16/BF16) tensors; quantized ones stay ``QuantizedTensor``.
        qk_heads: ``(num_attention_heads, num_key_value_heads)`` to undo the Q/K row permutation
            (Llama-architecture files); ``None`` leaves rows as stored.
        tie_word_embeddings: without ``output.weight``, ``lm_head.weight`` is the embedding (same object).

    The tensors are copies (the file is not kept mapped). Raises ``WeightLoadError`` naming the
    file and the tensors for unknown names, unsupported quantization types and bad shapes.
    """
    gguf = open_gguf(source)
    where = gguf.path
    names = {t.name: hf_tensor_name(t.name) for t in gguf.tensors}
    unknown = sorted(name for name, hf in names.items() if hf is None)
    if unknown:
        raise WeightLoadError(f"{where}: tensors with no place in a Llama-family model: {_name_list(unknown)}")
    if expected is not None:
        shapes = {names[t.name]: t.shape for t in gguf.tensors}
        if tie_word_embeddings and LM_HEAD_NAME not in shapes and EMBED_NAME in shapes:
            shapes[LM_HEAD_NAME] = shapes[EMBED_NAME]
        _check_expected(where, shapes, expected, strict=True)
    unsupported = [f"{t.name} ({_qtype_name(t.ggml_type)})" for t in gguf.tensors
                   if t.ggml_type not in _DENSE_TYPES and t.ggml_type not in SUPPORTED_QTYPES]
    if unsupported:
        kinds = ", ".join([*_DENSE_TYPES.values(), *(_qtype_name(q) for q in SUPPORTED_QTYPES)])
        raise WeightLoadError(f"{where}: tensor types inference-pio cannot compute with: "
                              f"{_name_list(unsupported)} (supported: {kinds})")
    state = {}
    for tensor in gguf.tensors:
        hf = names[tensor.name]
        try:
            state[hf] = _read_tensor(gguf.data(tensor), tensor, dtype, device, _qk_heads_of(hf, qk_heads))
        except (ValueError, TypeError) as exc:
            raise WeightLoadError(f"{where}: tensor {tensor.name}: {exc}") from exc
    if tie_word_embeddings:
        tie_embeddings(state)
    return state


def fuse_gguf_rows(state: dict, names: list[str], fused_name: str) -> bool:
    """``fuse_into`` for a GGUF state: dense parts concatenate as usual, quantized parts of one type
    concatenate their block rows (a row is self-contained). Returns ``False``, leaving ``state``
    alone, when the parts mix types (a Q4_K_M file stores V as Q6_K beside Q4_K Q and K)."""
    parts = [state[name] for name in names]
    if all(isinstance(p, torch.Tensor) for p in parts):
        fuse_into(state, names, fused_name)
        return True
    if not all(isinstance(p, QuantizedTensor) for p in parts) or len({p.qtype for p in parts}) > 1:
        return False
    if len({p.shape[1] for p in parts}) > 1:
        raise WeightLoadError(f"cannot build {fused_name}: {', '.join(names)} differ in columns")
    rows = sum(p.shape[0] for p in parts)
    fused = QuantizedTensor(torch.cat([p.data for p in parts]), parts[0].qtype, (rows, parts[0].shape[1]))
    for name in names:
        del state[name]
    state[fused_name] = fused
    return True


def _qk_heads_of(hf_name: str, qk_heads: tuple[int, int] | None) -> int | None:
    if qk_heads is None:
        return None
    if ".self_attn.q_proj." in hf_name:
        return qk_heads[0]
    return qk_heads[1] if ".self_attn.k_proj." in hf_name else None


def _read_tensor(data: np.ndarray, tensor: GGUFTensor, dtype: torch.dtype, device,
                 heads: int | None) -> torch.Tensor | QuantizedTensor:
    """``data``: the tensor's bytes (uint8, from the file's memory map)."""
    shape, qtype = tensor.shape, tensor.ggml_type
    if qtype in _DENSE_TYPES:
        values = data.view(_DENSE_NUMPY[qtype]).reshape(shape)
        if heads is not None:
            values = unpermute_qk_rows(values, heads)
        values = torch.from_numpy(np.array(values))  # a writable copy: the map stays read-only
        if qtype == 30:  # numpy has no bfloat16: the bits travel as uint16
            values = values.view(torch.bfloat16)
        return values.to(device=device, dtype=dtype)
    if len(shape) != 2:
        raise ValueError(f"a quantized tensor must be a matrix, this one has shape {list(shape)}")
    blocks = data.reshape(shape[0], -1)
    if heads is not None:
        blocks = unpermute_qk_rows(blocks, heads)
    return QuantizedTensor(torch.from_numpy(np.array(blocks)).to(device), qtype, shape)


def _qtype_name(qtype: int) -> str:
    from gguf import GGMLQuantizationType

    return GGMLQuantizationType(qtype).name
