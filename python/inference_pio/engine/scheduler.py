"""Continuous batching: which requests run in the next forward step, and how many tokens each brings.

Every live request wants ``num_tokens - num_computed`` tokens fed to the model (its prompt on
arrival; exactly one, its last sampled token, while decoding; prompt + output again after a
preemption). A step serves the running requests oldest first (decodes take one token, prompt chunks
what is left of ``token_budget``), then admits waiting requests first come, first served while
tokens, blocks and ``max_num_seqs`` allow. When the KV cache cannot hold a running request's next
tokens, the youngest running request is preempted: its blocks are freed and it goes back to the
front of the queue, to be recomputed later from its prompt and the tokens it already produced
(the tokens themselves are kept, so a resumed request continues exactly where it stopped). A
request that would not fit even in an empty cache fails with :class:`KVCacheFullError`.

With prefix caching on in the KV cache, a request admitted from the queue (new or resumed) starts
with the cached blocks its tokens lead with and counts them as computed, so it prefills only the
rest, like a later chunk of a chunked prefill. The full blocks each request computes are offered to
the cache at the start of the next step and when it leaves (finished, aborted or preempted).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .kv_cache import KVCacheFullError, PagedKVCache
from .sequence import Sequence


@dataclass(eq=False)
class Request:
    """One request in the scheduler: its ``Sequence`` plus how much of it the cache holds.

    ``sink`` receives the request's events (called from the thread that runs the step):
    ``RequestOutput`` after each sampled token, or the exception that ended the request.
    """

    request_id: str
    seq: Sequence
    arrival: int
    sink: Callable[[object], None] | None = None
    num_computed: int = 0  # tokens whose keys/values are in the cache
    num_preemptions: int = 0
    error: BaseException | None = None
    done: bool = False
    _pending: int = field(default=0, repr=False)  # tokens scheduled for the current step

    @property
    def num_pending(self) -> int:
        """Tokens not yet fed to the model."""
        return self.seq.num_tokens - self.num_computed


@dataclass(frozen=True)
class ScheduledStep:
    """The requests of one forward step, in batch order, with the number of new tokens of each."""

    requests: list[Request]
    num_new_tokens: list[int]

    def __bool__(self) -> bool:
        return bool(self.requests)


class Scheduler:
    """Waiting queue + running list over one ``PagedKVCache`` (not thread-safe: one driver at a time).

    ``token_budget``: most prompt tokens per step (decode tokens always run; chunks get what is left);
    ``max_num_seqs``: most requests holding KV blocks at once.
    """

    def __init__(self, kv_cache: PagedKVCache, token_budget: int, max_num_seqs: int):
        if token_budget < 1:
            raise ValueError(f"token_budget must be >= 1, got {token_budget}")
        if max_num_seqs < 1:
            raise ValueError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
        self.kv_cache = kv_cache
        self.token_budget = token_budget
        self.max_num_seqs = max_num_seqs
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, request: Request) -> None:
        self.waiting.append(request)

    def remove(self, request: Request) -> None:
        """Takes a request out (finished, aborted or failed) and frees its blocks; no-op when gone."""
        if request in self.running:
            self.running.remove(request)
        elif request in self.waiting:
            self.waiting.remove(request)
        if request.seq.seq_id in self.kv_cache:
            if request.seq.is_finished:  # not after a failure: its last step's keys may be garbage
                self._cache_computed(request)
            self.kv_cache.free(request.seq.seq_id)
        request.done = True

    def schedule(self) -> tuple[ScheduledStep, list[tuple[Request, KVCacheFullError]]]:
        """Picks the next step; returns it and the requests that can never fit (already removed)."""
        cache, room = self.kv_cache, self.token_budget
        failed: list[tuple[Request, KVCacheFullError]] = []
        step: list[Request] = []
        i = 0
        for req in self.running:  # what the last step computed becomes reusable
            self._cache_computed(req)
        while i < len(self.running):  # oldest first; victims are always taken from the end
            req = self.running[i]
            n = 1 if req.num_pending == 1 else min(req.num_pending, room)
            if n == 0:
                i += 1
                continue
            while not cache.can_append(req.seq.seq_id, n) and self.running[-1] is not req:
                self._preempt(self.running[-1])
            if not cache.can_append(req.seq.seq_id, n):
                if len(self.running) == 1:  # alone and still too big: no amount of waiting helps
                    failed.append((req, self._too_big(req, req.seq.num_tokens + (n == 1))))
                    self.remove(req)
                else:
                    self._preempt(req)
                break
            cache.append_slots(req.seq.seq_id, n)
            req._pending = n
            room -= 0 if n == 1 else n
            step.append(req)
            i += 1
        while self.waiting and room > 0 and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            if cache.blocks_needed(req.seq.num_tokens) > cache.num_blocks:
                self.waiting.popleft()
                failed.append((req, self._too_big(req, req.seq.num_tokens)))
                self.remove(req)
                continue
            prefix = cache.find_cached_prefix(req.seq.token_ids, req.seq.block_hashes)
            cached = len(prefix.blocks) * cache.block_size if prefix is not None else 0
            n = min(req.seq.num_tokens - cached, room)
            if not cache.can_allocate(cached + n, prefix):
                break  # running requests hold the blocks: wait for some to finish
            self.waiting.popleft()
            cache.allocate(req.seq.seq_id, cached + n, prefix)
            req.num_computed = cached
            req._pending = n
            room -= n
            self.running.append(req)
            step.append(req)
        return ScheduledStep(step, [r._pending for r in step]), failed

    def _preempt(self, req: Request) -> None:
        """Frees ``req``'s blocks and puts it back in the queue, ahead of later arrivals."""
        self.running.remove(req)
        self._cache_computed(req)
        self.kv_cache.free(req.seq.seq_id)
        req.num_computed = 0
        req.num_preemptions += 1
        self.num_preemptions += 1
        pos = next((k for k, w in enumerate(self.waiting) if w.arrival > req.arrival), len(self.waiting))
        self.waiting.insert(pos, req)

    def _cache_computed(self, req: Request) -> None:
        self.kv_cache.cache_computed_blocks(req.seq.seq_id, req.seq.token_ids, req.seq.block_hashes, req.num_computed)

    def _too_big(self, req: Request, num_tokens: int) -> KVCacheFullError:
        cache = self.kv_cache
        return KVCacheFullError(cache.blocks_needed(num_tokens), cache.num_blocks, cache.block_size,
                                f"request {req.request_id!r} ({num_tokens} tokens; the whole cache holds "
                                f"{cache.num_blocks * cache.block_size})")


__all__ = ["Request", "ScheduledStep", "Scheduler"]
