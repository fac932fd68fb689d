"""Building fused projections and tied embeddings while loading (not in ``forward``).

Fusing q/k/v (and gate/up) rows into one matrix lets the model run one matmul where the
checkpoint stores several; the split sizes say where to cut the result.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .errors import WeightLoadError

EMBED_NAME = "model.embed_tokens.weight"
LM_HEAD_NAME = "lm_head.weight"


def fuse_rows(
    tensors: Sequence[torch.Tensor], names: Sequence[str] | None = None
) -> tuple[torch.Tensor, list[int]]:
    """Concatenate ``tensors`` along dim 0: ``[q, k, v]`` -> ``(qkv, [q_rows, k_rows, v_rows])``.

    All tensors need the same trailing dims, dtype and device; ``names`` (one per tensor)
    are used in error messages.
    """
    if not tensors:
        raise ValueError("fuse_rows needs at least one tensor")
    names = list(names) if names is not None else [f"tensors[{i}]" for i in range(len(tensors))]
    if len(names) != len(tensors):
        raise ValueError(f"fuse_rows got {len(tensors)} tensors but {len(names)} names")
    first = tensors[0]

    def layout(t: torch.Tensor) -> tuple:
        return t.shape[1:], t.dtype, t.device

    for name, tensor in zip(names, tensors):
        if tensor.dim() == 0:
            raise ValueError(f"fuse_rows: {name} is a scalar, it has no rows")
        if layout(tensor) != layout(first):
            raise ValueError(
                f"fuse_rows: {name} is {tuple(tensor.shape)} {tensor.dtype} on {tensor.device}, "
                f"but {names[0]} is {tuple(first.shape)} {first.dtype} on {first.device} "
                "(trailing dims, dtype and device must match)"
            )
    return torch.cat(list(tensors), dim=0), [t.shape[0] for t in tensors]


def fuse_into(state: dict[str, torch.Tensor], names: Sequence[str], fused_name: str) -> list[int]:
    """Replace ``names`` in ``state`` by their ``fuse_rows`` under ``fused_name``.

    Returns the split sizes (rows of each part, in the order of ``names``).
    """
    missing = [name for name in names if name not in state]
    if missing:
        raise WeightLoadError(f"cannot build {fused_name}: missing {', '.join(missing)}")
    fused, sizes = fuse_rows([state[name] for name in names], names)
    for name in names:
        del state[name]
    state[fused_name] = fused
    return sizes


def tie_embeddings(
    state: dict[str, torch.Tensor], *, embed_name: str = EMBED_NAME, head_name: str = LM_HEAD_NAME
) -> dict[str, torch.Tensor]:
    """Use the token embedding as the output projection when the checkpoint has none.

    For configs with ``tie_word_embeddings``. ``state[head_name]`` becomes the same tensor
    object as ``state[embed_name]`` (no copy); a stored head is kept. Returns ``state``.
    """
    if head_name not in state:
        if embed_name not in state:
            raise WeightLoadError(
                f"cannot tie {head_name} to {embed_name}: neither is in the checkpoint"
            )
        state[head_name] = state[embed_name]
    return state
