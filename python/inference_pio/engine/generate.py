"""The generation engine: continuous batching over a paged KV cache, sampling, stops, streaming.

``GenerationEngine`` drives any model with the engine's forward signature
``model(input_ids [T], positions [T], meta, key_caches, value_caches) -> logits [num_seqs, vocab]``.
Requests enter a :class:`~inference_pio.engine.scheduler.Scheduler`; each :meth:`step` runs one
forward over what the scheduler picked (decode tokens of running requests and prompt chunks of new
ones, packed together), samples the requests whose pending tokens are all in the cache, and hands
each request's new token and text to its sink. Requests may arrive and leave between steps.

The synchronous ``generate`` / ``stream`` add their requests and step until those finish; a
:class:`~inference_pio.engine.async_engine.AsyncEngine` steps from a background thread. Both may
run at once: every step happens under the engine's lock and serves every live request.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence as SequenceABC

import torch

from .kv_cache import PagedKVCache
from .openmp_pool import release_openmp_pool
from .sampler import Sampler, SamplingParams, TokenLogprobs
from .scheduler import Request, Scheduler
from .sequence import Sequence
from .streaming import Decoder

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RequestOutput:
    """What one step produced for one request: its new token ids, the text they made final, and
    ``finish_reason`` ("stop" / "length") on the request's last output, else None; ``logprobs``: one
    entry per new token when the request's params ask for them."""

    request_id: str
    token_ids: list[int]
    text: str
    finish_reason: str | None
    logprobs: list[TokenLogprobs] | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


class GenerationEngine:
    """Runs requests through ``model`` with ``kv_cache``.

    ``max_model_len``: most tokens (prompt + output) one sequence may hold; ``prefill_budget``:
    most prompt tokens in one forward step; ``max_num_seqs``: most requests running at once.
    ``tokenizer`` enables text output and stop strings. ``enable_prefix_caching`` turns on the KV
    cache's prefix caching (a request reuses the cached blocks its prompt starts with).
    """

    def __init__(self, model, kv_cache: PagedKVCache, *, max_model_len: int, prefill_budget: int = 512,
                 max_num_seqs: int = 256, tokenizer: Decoder | None = None, eos_token_ids: Iterable[int] = (),
                 enable_prefix_caching: bool = True):
        self.model = model
        self.kv_cache = kv_cache
        if enable_prefix_caching and not kv_cache.prefix_caching:
            kv_cache.enable_prefix_caching()
        self.max_model_len = max_model_len
        self.scheduler = Scheduler(kv_cache, prefill_budget, max_num_seqs)
        self.tokenizer = tokenizer
        self.eos_token_ids = tuple(eos_token_ids)
        self.device = kv_cache.device
        self.sampler = Sampler()
        self.lock = threading.RLock()
        self._ids = itertools.count()
        self._inbox: deque[tuple[str, Request]] = deque()  # adds / aborts from any thread, applied by step()
        self._faults: dict[int, BaseException] = {}  # seq_id -> what its logits processor raised this step
        # Step inputs are written through numpy views of reused buffers (no tensor built per step).
        self._input_ids = torch.empty(max(prefill_budget, 1), dtype=torch.int64)
        self._positions = torch.empty_like(self._input_ids)

    @property
    def prefill_budget(self) -> int:
        return self.scheduler.token_budget

    @prefill_budget.setter
    def prefill_budget(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"prefill_budget must be >= 1, got {value}")
        self.scheduler.token_budget = value

    # ----- requests -----

    def new_request(self, prompt: SequenceABC[int], params: SamplingParams, *, request_id: str | None = None,
                    sink: Callable[[object], None] | None = None, index: int = 0) -> Request:
        """Checks one prompt and wraps it as a ``Request`` (not yet submitted: see ``submit``)."""
        n = len(prompt)
        if n >= self.max_model_len:
            raise ValueError(f"prompt {index} has {n} tokens but the context holds at most {self.max_model_len} "
                             f"tokens (prompt + at least one generated token)")
        # Generation stops with "length" where the context ends.
        seq_id = next(self._ids)
        params = dataclasses.replace(params, max_tokens=min(params.max_tokens, self.max_model_len - n),
                                     logits_processors=tuple(self._guarded(seq_id, f) for f in params.logits_processors))
        seq = Sequence(seq_id, prompt, params, self.tokenizer, self.eos_token_ids, self.device)
        return Request(str(seq_id) if request_id is None else request_id, seq, seq_id, sink)

    def submit(self, request: Request) -> None:
        """Queues a request; it joins the batch at the next step (safe from any thread)."""
        self._inbox.append(("add", request))

    def abort(self, request: Request) -> None:
        """Stops a request and frees its blocks at the next step (safe from any thread)."""
        self._inbox.append(("abort", request))

    @property
    def has_work(self) -> bool:
        return bool(self._inbox) or self.scheduler.has_work

    def stats(self) -> dict:
        """Live figures: requests waiting / running, KV blocks used / total, preemptions so far, and the
        prefix cache's prompt tokens looked up / found (so far) and blocks cached (now)."""
        s, usage = self.scheduler, self.kv_cache.usage()
        return {"waiting": len(s.waiting) + sum(op == "add" for op, _ in list(self._inbox)),
                "running": len(s.running), "kv_blocks_used": usage.used_blocks,
                "kv_blocks_total": usage.num_blocks, "kv_usage": usage.used_fraction,
                "preemptions": s.num_preemptions, "prefix_cache_queries": usage.prefix_cache_queries,
                "prefix_cache_hits": usage.prefix_cache_hits, "prefix_cache_blocks": usage.cached_blocks}

    # ----- synchronous API -----

    def generate(self, prompts: SequenceABC[SequenceABC[int]],
                 params: SamplingParams | SequenceABC[SamplingParams]) -> list[Sequence]:
        """Runs every prompt (token ids) to completion; returns their finished ``Sequence``s in order.

        Raises the first error of any of them (the others are then aborted).
        """
        requests = self._new_requests(prompts, params, sink=None)
        for _ in self._drive(requests):
            pass
        return [r.seq for r in requests]

    def stream(self, prompt: SequenceABC[int], params: SamplingParams) -> Iterator[str]:
        """Yields the text pieces of one request as they become final (needs a tokenizer)."""
        if self.tokenizer is None:
            raise ValueError("streaming text needs a tokenizer")
        pieces: list[str] = []
        [request] = self._new_requests([prompt], params, sink=lambda out: pieces.append(out.text))
        for _ in self._drive([request]):
            while pieces:
                piece = pieces.pop(0)
                if piece:
                    yield piece

    def _new_requests(self, prompts, params, sink) -> list[Request]:
        if isinstance(params, SamplingParams):
            params = [params] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(params)} SamplingParams")
        if not prompts:
            raise ValueError("no prompts given")
        return [self.new_request(prompt, p, sink=sink, index=i) for i, (prompt, p) in enumerate(zip(prompts, params))]

    def _drive(self, requests: list[Request]) -> Iterator[None]:
        """Steps (under the lock) until ``requests`` are done; aborts them if the caller stops early."""
        for r in requests:
            self.submit(r)
        try:
            while not all(r.done for r in requests):
                with self.lock:
                    self.step()
                for r in requests:
                    if r.error is not None:
                        raise r.error
                yield
        finally:
            pending = [r for r in requests if not r.done]
            if pending:
                for r in pending:
                    self.abort(r)
                with self.lock:
                    self._apply_inbox()
            release_openmp_pool()  # one live OpenMP pool at a time (see openmp_pool.py)

    # ----- one step -----

    def step(self) -> None:
        """One forward over the scheduled requests and sampling of the completed ones (hold ``lock``)."""
        self._apply_inbox()
        step, failed = self.scheduler.schedule()
        for req, error in failed:
            self._fail(req, error)
        if not step:
            return
        try:
            self._forward_and_sample(step.requests, step.num_new_tokens)
        except Exception as e:  # the model failed: every request of the step fails with it, blocks freed
            for req in step.requests:
                self.scheduler.remove(req)
                self._fail(req, e)

    def _apply_inbox(self) -> None:
        while self._inbox:
            op, req = self._inbox.popleft()
            if op == "add" and not req.done:
                self.scheduler.add(req)
            elif op == "abort":
                self.scheduler.remove(req)

    def fail_all(self, error: BaseException) -> None:
        """Ends every live request with ``error`` and frees its blocks (hold ``lock``)."""
        self._apply_inbox()
        for req in list(self.scheduler.running) + list(self.scheduler.waiting):
            self.scheduler.remove(req)
            self._fail(req, error)

    def _fail(self, req: Request, error: BaseException) -> None:
        req.error, req.done = error, True
        self._faults.pop(req.seq.seq_id, None)
        if req.sink is not None:
            try:
                req.sink(error)
            except Exception:  # a sink that cannot take its error (its loop closed) must not fail the step
                log.exception("request %s: its sink refused the error %r", req.request_id, error)

    def _guarded(self, seq_id: int, processor: Callable) -> Callable:
        """``processor`` with its exceptions kept for its own request: the step ends that request alone
        (in ``_finish_row``) and the rest of the batch goes on."""
        faults = self._faults

        def guarded(output_token_ids, logits):
            if seq_id in faults:
                return
            try:
                processor(output_token_ids, logits)
            except Exception as e:  # noqa: BLE001 -- handed to the request by _finish_row
                faults[seq_id] = e
        return guarded

    def _forward_and_sample(self, requests: list[Request], lens: list[int]) -> None:
        ids: list[int] = []
        positions: list[int] = []
        for r, n in zip(requests, lens):
            start = r.num_computed
            ids += r.seq.token_ids[start:start + n]
            positions += range(start, start + n)
        t = len(ids)
        if t > self._input_ids.shape[0]:
            self._input_ids = torch.empty(t, dtype=torch.int64)
            self._positions = torch.empty_like(self._input_ids)
        self._input_ids.numpy()[:t] = ids
        self._positions.numpy()[:t] = positions
        cache = self.kv_cache
        meta = cache.build_metadata([r.seq.seq_id for r in requests], lens)
        input_ids, pos = self._input_ids[:t].to(self.device), self._positions[:t].to(self.device)
        logits = self.model(input_ids, pos, meta, cache.key_caches, cache.value_caches)
        for r, n in zip(requests, lens):
            r.num_computed += n
        rows = [i for i, r in enumerate(requests) if r.num_pending == 0]
        if not rows:
            return
        if len(rows) < len(requests):
            logits = logits[torch.tensor(rows, device=logits.device)]
        batch = [requests[i].seq for i in rows]
        next_ids, logprobs = self.sampler.sample(
            logits.float(), [s.params for s in batch], [s.seen_token_ids() for s in batch], [s.generator for s in batch],
            [s.output_token_ids if s.params.logits_processors else None for s in batch])
        for i, token, token_logprobs in zip(rows, next_ids.tolist(), logprobs):
            self._finish_row(requests[i], token, token_logprobs)

    def _finish_row(self, req: Request, token: int, token_logprobs=None) -> None:
        """Hands one sampled token to its request; a fault of this request (its logits processor, its
        stop strings, its sink) ends it alone."""
        try:
            fault = self._faults.pop(req.seq.seq_id, None) if self._faults else None
            if fault is not None:
                raise fault
            piece = req.seq.append_token(token, token_logprobs)
            if req.seq.is_finished:
                self.scheduler.remove(req)
            if req.sink is not None:
                req.sink(RequestOutput(req.request_id, [token], piece, req.seq.finish_reason,
                                       None if token_logprobs is None else [token_logprobs]))
        except Exception as e:
            self.scheduler.remove(req)
            self._fail(req, e)


def greedy(max_tokens: int, **kwargs) -> SamplingParams:
    """``SamplingParams`` for greedy decoding (a shorthand used by tests and benchmarks)."""
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **kwargs)


__all__ = ["GenerationEngine", "RequestOutput", "greedy"]
