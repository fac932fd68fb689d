"""``ModelLane``: one model's own event loop, in its own thread, with its own bounded thread pool.

The :class:`~inference_pio.services.switcher.ModelSwitcher` runs every call to a model in that model's
lane, so nothing one model does can hold up another: a model that blocks its event loop blocks its lane
only, and one whose worker threads hang fills its own pool (``asyncio.to_thread`` in a lane uses the
lane's pool), never the pool of the caller or of the fallback. The caller awaits with a timeout and
moves on; cancelling the await cancels the call in the lane as soon as the lane's loop runs again.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ModelLane:
    def __init__(self, name: str, max_threads: int = 4):
        if max_threads < 1:
            raise ValueError(f"max_threads must be >= 1, got {max_threads}")
        self.name = name
        self._loop = asyncio.new_event_loop()
        self._closing = False
        self._executor = ThreadPoolExecutor(max_threads, thread_name_prefix=f"pio-{name}")
        self._loop.set_default_executor(self._executor)
        # A daemon thread: a model stuck in its loop must not keep the process alive.
        self._thread = threading.Thread(target=self._run, name=f"pio-lane-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        loop = self._loop
        loop.run_forever()
        # Stopped by close(): cancel what is still running, give it a moment to unwind, then close the loop.
        left = asyncio.all_tasks(loop)
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.wait(left, timeout=1.0))
        loop.close()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Awaits ``coro`` run in the lane (from any other event loop)."""
        if self._closing or not self._thread.is_alive():
            coro.close()
            raise RuntimeError(f"the lane of {self.name} is closed")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def close(self) -> None:
        """Stops the lane's loop; its threads still busy finish on their own (nothing waits for them)."""
        if not self._closing and self._thread.is_alive():
            self._closing = True
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._executor.shutdown(wait=False, cancel_futures=True)


__all__ = ["ModelLane"]
