"""Rank 0 runs the engine; the other ranks repeat each of its forward steps on their shards.

The scheduler, sampler and KV block allocation live on rank 0 alone. ``LeaderModel`` wraps rank 0's
model: before each step it broadcasts the step (token ids, positions and the attention metadata,
whose block ids index every rank's identically sized KV cache), so ``follow`` on the other ranks
runs the same forward, joining its all-reduces and all-gathers. ``LeaderModel.stop`` ends them.
Everything travels as int64 tensors (two broadcasts per step, no pickles).
"""

from __future__ import annotations

import threading

import torch
import torch.distributed as dist

from ..engine.metadata import AttentionMetadata

_STOP, _STEP, _IDLE = 0, 1, 2
_HEADER = 7  # kind, tokens, sequences, block-table width, max_seqlen_q, max_seqlen_k, all_logits


class LeaderModel:
    """Rank 0's model: every call is first broadcast to the followers.

    While the engine is idle, ``start_heartbeat`` broadcasts an empty step every ``interval`` seconds,
    so a follower's wait never reaches the collective timeout, and a dead follower is noticed: the
    heartbeat's broadcast fails and ``on_lost`` runs (the server exits).
    """

    def __init__(self, model):
        self.model = model
        self.device = next(model.parameters()).device  # NCCL broadcasts need tensors on the GPU
        self._lock = threading.Lock()  # one collective sequence at a time: a step or a heartbeat
        self._stopped = threading.Event()

    def __getattr__(self, name):  # config, workspace... of the wrapped model
        return getattr(self.model, name)

    def __call__(self, input_ids, positions, meta: AttentionMetadata, key_caches, value_caches,
                 all_logits: bool = False):
        n, width = meta.block_tables.shape
        header = [_STEP, input_ids.shape[0], n, width, meta.max_seqlen_q, meta.max_seqlen_k, int(all_logits)]
        parts = (input_ids, positions, meta.slot_mapping, meta.block_tables.reshape(-1), meta.context_lens,
                 meta.cu_seqlens_q, meta.cu_seqlens_k)
        with self._lock:
            _broadcast_header(header, input_ids.device)
            dist.broadcast(torch.cat([p.to(torch.int64) for p in parts]), src=0)
            return self.model(input_ids, positions, meta, key_caches, value_caches, all_logits=all_logits)

    def start_heartbeat(self, interval: float, on_lost) -> None:
        def beat():
            while not self._stopped.wait(interval):
                try:
                    with self._lock:
                        if not self._stopped.is_set():
                            _broadcast_header([_IDLE] + [0] * (_HEADER - 1), self.device)
                except Exception as e:  # noqa: BLE001 -- a rank is gone: the caller decides how to end
                    on_lost(e)
                    return

        threading.Thread(target=beat, name="inference-pio-tp-heartbeat", daemon=True).start()

    def stop(self) -> None:
        """Ends the followers' loops (after the engine's last step)."""
        with self._lock:
            self._stopped.set()
            _broadcast_header([_STOP] + [0] * (_HEADER - 1), self.device)


def _broadcast_header(values: list[int], device) -> None:
    dist.broadcast(torch.tensor(values, dtype=torch.int64, device=device), src=0)


def follow(model, kv_cache) -> int:
    """Runs rank 0's steps on this rank's shard until it stops them; returns the number of steps."""
    steps = 0
    while True:
        header = torch.empty(_HEADER, dtype=torch.int64, device=kv_cache.device)
        dist.broadcast(header, src=0)
        kind, t, n, width, max_q, max_k, all_logits = header.tolist()
        if kind == _STOP:
            return steps
        if kind == _IDLE:
            continue
        packed = torch.empty(3 * t + n * width + 3 * n + 2, dtype=torch.int64, device=kv_cache.device)
        dist.broadcast(packed, src=0)
        ids, pos, slots, tables, lens, cu_q, cu_k = packed.split([t, t, t, n * width, n, n + 1, n + 1])
        meta = AttentionMetadata(slots, tables.to(torch.int32).reshape(n, width), lens.to(torch.int32),
                                 cu_q.to(torch.int32), cu_k.to(torch.int32), max_q, max_k)
        model(ids, pos, meta, kv_cache.key_caches, kv_cache.value_caches, all_logits=bool(all_logits))
        steps += 1
