"""Release the calling thread's OpenMP thread pool when it stops doing engine work.

GNU OpenMP (the runtime torch ships and our kernels share) keeps one pool of worker threads per
thread that has opened a parallel region, for as long as that thread lives. It also counts every
worker of every pool: once they outnumber the CPUs it stops spinning between parallel regions and
puts workers to sleep instead, so each of the ~100 regions of a decode step pays a futex wake-up.
Loading a model on the main thread and then decoding on the async engine's thread is exactly that
case on a 2-core machine: two pools, four threads, decode at ~40% of its speed (measured on an AMD
EPYC: 101 tokens/s on the engine thread against 277 on the main thread; 250 once the main thread's
pool is released).

So a thread that finishes a burst of engine work (loading and warm-up, a blocking ``generate``, the
async engine going idle) releases its pool with ``omp_pause_resource_all`` (OpenMP 5.0); the next
parallel region on that thread starts a new one (tens of microseconds, once per burst). With only
one pool alive, workers spin between regions as they should. A runtime without the call (or no
OpenMP loaded at all) makes this a no-op.
"""

from __future__ import annotations

import ctypes
import os
import threading

_OMP_PAUSE_SOFT = 1
# Names the OpenMP runtime is loaded under. dlopen of a bare soname returns the copy already in the
# process (torch's bundled libgomp), never a second runtime.
_RUNTIMES = ("libgomp.so.1", "libomp.so", "libiomp5.so")
_lock = threading.Lock()
_pause = None  # the resolved omp_pause_resource_all, or False when there is none


def _resolve():
    global _pause
    with _lock:
        if _pause is None:
            _pause = False
            import torch  # noqa: F401 -- loads torch's OpenMP runtime first, the one our kernels bind to

            for name in _RUNTIMES:
                try:
                    fn = ctypes.CDLL(name, mode=os.RTLD_NOLOAD).omp_pause_resource_all
                except (OSError, AttributeError):
                    continue
                fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
                _pause = fn
                break
    return _pause


def release_openmp_pool() -> bool:
    """Ends the calling thread's OpenMP worker threads (they restart on its next parallel region).
    Returns False when no OpenMP runtime with ``omp_pause_resource_all`` is loaded, or when called
    inside a parallel region (the runtime refuses; nothing changes)."""
    pause = _pause if _pause is not None else _resolve()
    return bool(pause) and pause(_OMP_PAUSE_SOFT) == 0
