"""Sentence vectors from packed token states, pooled as sentence-transformers' Pooling module does.

Packed layout: ``hidden [T, H]`` holds every sequence's tokens back to back, sequence ``b`` owning
rows ``cu_seqlens[b]:cu_seqlens[b+1]``. No padding exists, so no mask is needed: each mode reduces
over exactly the sequence's own tokens (the same numbers sentence-transformers gets from a padded,
masked batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .sentence_config import POOLING_MODES


def pool_packed(hidden: torch.Tensor, cu_seqlens: torch.Tensor, modes: tuple[str, ...]) -> torch.Tensor:
    """``hidden [T, H]`` (any float dtype), ``cu_seqlens [B+1]`` (int, starts at 0, every length >= 1)
    -> ``[B, H * len(modes)]`` float32, one block of ``H`` per mode in ``modes`` order."""
    h = hidden.float()
    cu = cu_seqlens.to(device=h.device, dtype=torch.long)
    starts, ends = cu[:-1], cu[1:]
    lens = ends - starts
    batch, width = lens.shape[0], h.shape[1]
    seq = torch.repeat_interleave(torch.arange(batch, device=h.device), lens, output_size=h.shape[0])
    sums = None
    if any(m.startswith("mean") for m in modes):
        sums = h.new_zeros(batch, width).index_add_(0, seq, h)
    out = []
    for mode in modes:
        if mode == "cls":
            out.append(h[starts])
        elif mode == "lasttoken":
            out.append(h[ends - 1])
        elif mode == "mean":
            out.append(sums / lens[:, None])
        elif mode == "mean_sqrt_len_tokens":
            out.append(sums / lens[:, None].float().sqrt())
        elif mode == "max":
            out.append(h.new_empty(batch, width).scatter_reduce_(0, seq[:, None].expand_as(h), h, "amax", include_self=False))
        elif mode == "weightedmean":  # token i of a sequence (from 0) weighs i + 1
            w = (torch.arange(h.shape[0], device=h.device) - starts[seq] + 1).float()[:, None]
            out.append(h.new_zeros(batch, width).index_add_(0, seq, h * w) / (lens * (lens + 1) / 2)[:, None])
        else:
            raise ValueError(f"unknown pooling mode {mode!r} (one of {', '.join(POOLING_MODES)})")
    return torch.cat(out, dim=1)


def l2_normalize(vectors: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (sentence-transformers' Normalize module)."""
    return F.normalize(vectors, p=2, dim=1)
