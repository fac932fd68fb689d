"""``AsyncEngine``: the generation engine stepped by a background thread, for asyncio callers.

Many coroutines call :meth:`AsyncEngine.generate` at once; their requests join the running batch
between steps (continuous batching) and each coroutine receives only its own outputs. The model
runs in the engine thread (the kernels release the GIL), so the event loop never blocks on it.
Closing a ``generate`` iterator early (client gone, task cancelled) aborts the request and frees
its KV blocks at the next step.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Sequence

from .generate import GenerationEngine, RequestOutput
from .openmp_pool import release_openmp_pool
from .sampler import SamplingParams


class AsyncEngine:
    """Wraps a ``GenerationEngine``; the stepping thread starts on first use and stops at ``shutdown``."""

    def __init__(self, engine: GenerationEngine):
        self.engine = engine
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # A step's outputs, per event loop: handed over with one wake-up of each loop per step instead
        # of one per token (at 32+ streams those wake-ups were the serving path's largest cost).
        self._outbox: dict[asyncio.AbstractEventLoop, list] = {}

    def stats(self) -> dict:
        """The engine's live figures (waiting, running, KV blocks used / total, ...)."""
        return self.engine.stats()

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams,
                       request_id: str | None = None) -> AsyncIterator[RequestOutput]:
        """Yields one ``RequestOutput`` per generated token until the request finishes.

        Raises ValueError for a prompt the context cannot hold (before anything runs), and the error
        that ended the request otherwise (e.g. ``KVCacheFullError`` for a request larger than the cache).
        """
        if self._stopped:
            raise RuntimeError("the engine was shut down")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        request = None

        def sink(item) -> None:  # runs in the engine thread: held until the step ends (``_flush``)
            if threading.current_thread() is self._thread:
                self._outbox.setdefault(loop, []).append((queue, item, request))
            else:
                loop.call_soon_threadsafe(queue.put_nowait, item)

        request = self.engine.new_request(list(prompt_ids), params, sink=sink,
                                          request_id=request_id or uuid.uuid4().hex)
        self._ensure_thread()
        self.engine.submit(request)
        self._wake.set()
        finished = False
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self.engine.abort(request)
                self._wake.set()

    def shutdown(self) -> None:
        """Stops the stepping thread (requests still running are aborted)."""
        self._stopped = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="inference-pio-engine", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        engine = self.engine
        while not self._stopped:
            if not engine.has_work:
                release_openmp_pool()  # idle: let a thread that works now run the only pool (openmp_pool.py)
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                with engine.lock:
                    engine.step()
            except Exception as e:  # a scheduler bug must not leave coroutines waiting forever
                self._fail_all(e)
            self._flush()
        self._fail_all(RuntimeError("the engine was shut down"))

    def _fail_all(self, error: BaseException) -> None:
        with self.engine.lock:
            self.engine.fail_all(error)
        self._flush()

    def _flush(self) -> None:
        """Hands each event loop the outputs its requests got this step, in one call."""
        outbox, self._outbox = self._outbox, {}
        for loop, items in outbox.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop is closed: nobody reads these requests any more
                for request in {id(r): r for _, _, r in items}.values():
                    self.engine.abort(request)


def _deliver(items) -> None:
    for queue, item, _ in items:
        queue.put_nowait(item)


__all__ = ["AsyncEngine"]
