"""Attention metadata for one forward step, written into reused buffers.

The integer tensors here are what every attention backend reads (vLLM/FlashInfer style): a slot per
new token for ``reshape_and_cache``, padded block tables and context lengths for
``paged_decode_attention``, cumulative sequence lengths for the packed ``prefill_attention``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class AttentionMetadata:
    """Metadata of one step over ``num_seqs`` sequences and ``num_tokens`` new (query) tokens.

    - ``slot_mapping``: int64 ``[num_tokens]``, the cache slot of each new token, packed in batch order.
    - ``block_tables``: int32 ``[num_seqs, max_blocks]``, contiguous; row ``i`` holds sequence ``i``'s
      physical block ids, padded with 0 (a valid id, so a kernel that over-reads never faults; entries
      past ``ceil(context_lens[i] / block_size)`` are meaningless).
    - ``context_lens``: int32 ``[num_seqs]``, tokens in the cache per sequence including this step's.
    - ``cu_seqlens_q``: int32 ``[num_seqs + 1]``, prefix sums of the new-token counts (packed queries).
    - ``cu_seqlens_k``: int32 ``[num_seqs + 1]``, prefix sums of ``context_lens`` (equal to
      ``cu_seqlens_q`` when every sequence is a fresh prefill).
    - ``max_seqlen_q`` / ``max_seqlen_k``: Python ints, for kernel grids without a device sync.

    The tensors are views of buffers reused by the next step: copy them to keep them.
    """

    slot_mapping: torch.Tensor
    block_tables: torch.Tensor
    context_lens: torch.Tensor
    cu_seqlens_q: torch.Tensor
    cu_seqlens_k: torch.Tensor
    max_seqlen_q: int
    max_seqlen_k: int

    @property
    def num_seqs(self) -> int:
        return self.context_lens.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.slot_mapping.shape[0]

    @property
    def is_decode(self) -> bool:
        """True when every sequence contributes exactly one new token."""
        return self.max_seqlen_q == 1


class _Buffer:
    """A 1-D host tensor (pinned when the cache is on a GPU) with its numpy view and device twin."""

    def __init__(self, dtype: torch.dtype, device: torch.device):
        self.dtype = dtype
        self.device = device
        self.host = torch.empty(0, dtype=dtype)
        self.np = self.host.numpy()
        self.dev = self.host

    def ensure(self, n: int) -> None:
        if n <= self.host.shape[0]:
            return
        size = max(n, 2 * self.host.shape[0], 64)  # grow geometrically: a handful of reallocations per run
        pin = self.device.type == "cuda"
        self.host = torch.empty(size, dtype=self.dtype, pin_memory=pin)
        self.np = self.host.numpy()
        self.dev = self.host if self.device.type == "cpu" else torch.empty(size, dtype=self.dtype, device=self.device)

    def view(self, n: int) -> torch.Tensor:
        """The first ``n`` entries on the target device (copied there asynchronously if needed)."""
        if self.dev is self.host:
            return self.host[:n]
        out = self.dev[:n]
        out.copy_(self.host[:n], non_blocking=True)
        return out


class MetadataBuffers:
    """Reused host/device buffers behind :class:`AttentionMetadata`.

    Values are written through numpy views (one C-level conversion per Python list, no torch op per
    sequence). On a GPU the host buffers are pinned and copied without blocking; before they are
    rewritten, an event from the previous copy is waited on so a copy still in flight never reads
    the next step's values.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self._slots = _Buffer(torch.int64, device)
        self._tables = _Buffer(torch.int32, device)
        self._ctx = _Buffer(torch.int32, device)
        self._cu_q = _Buffer(torch.int32, device)
        self._cu_k = _Buffer(torch.int32, device)
        self._copied: torch.cuda.Event | None = None

    def fill(
        self,
        slots: Sequence[int],
        tables: Sequence[Sequence[int]],
        context_lens: Sequence[int],
        query_lens: Sequence[int],
    ) -> AttentionMetadata:
        num_seqs, num_tokens = len(tables), len(slots)
        width = max(len(t) for t in tables)
        if self._copied is not None:
            self._copied.synchronize()
        for buf, n in ((self._slots, num_tokens), (self._tables, num_seqs * width), (self._ctx, num_seqs),
                       (self._cu_q, num_seqs + 1), (self._cu_k, num_seqs + 1)):
            buf.ensure(n)

        self._slots.np[:num_tokens] = slots
        # One padded flat list, converted by numpy in a single call (cheaper than a slice per row).
        flat: list[int] = []
        pad = [0] * width
        for table in tables:
            flat += table
            flat += pad[len(table) :]
        self._tables.np[: num_seqs * width] = flat
        self._ctx.np[:num_seqs] = context_lens
        for buf, lens in ((self._cu_q, query_lens), (self._cu_k, context_lens)):
            buf.np[0] = 0
            np.cumsum(lens, dtype=np.int32, out=buf.np[1 : num_seqs + 1])

        meta = AttentionMetadata(
            slot_mapping=self._slots.view(num_tokens),
            block_tables=self._tables.view(num_seqs * width).view(num_seqs, width),
            context_lens=self._ctx.view(num_seqs),
            cu_seqlens_q=self._cu_q.view(num_seqs + 1),
            cu_seqlens_k=self._cu_k.view(num_seqs + 1),
            max_seqlen_q=max(query_lens),
            max_seqlen_k=max(context_lens),
        )
        if self.device.type == "cuda":
            self._copied = torch.cuda.Event()
            self._copied.record()
        return meta
