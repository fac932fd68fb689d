"""Reused activation buffers: one flat buffer per name, grown only when a step needs more."""

from __future__ import annotations

import torch


class Workspace:
    """Named 2-D scratch buffers ``[rows, cols]`` on one device.

    Layers run one after another, so a single set of buffers serves every layer of a model. A
    buffer grows (geometrically) when a step has more rows than any before; otherwise ``get``
    returns a view of memory already touched, which avoids the page-fault cost of fresh
    allocations on the hot path.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
        """A contiguous ``[rows, cols]`` view of buffer ``name`` (contents undefined)."""
        need = rows * cols
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < need or buf.dtype != dtype:
            size = max(need, 2 * buf.numel()) if buf is not None and buf.dtype == dtype else need
            buf = torch.empty(size, dtype=dtype, device=self.device)
            self._buffers[name] = buf
        return buf[:need].view(rows, cols)

    def clear(self) -> None:
        """Drop every buffer (their memory is freed once no view is alive)."""
        self._buffers.clear()
