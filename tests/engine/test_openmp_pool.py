"""Threads that finish engine work release their OpenMP pools, so only one pool is ever alive.

Two live pools on a 2-core machine put the OpenMP runtime in its oversubscribed mode (workers sleep
between parallel regions) and cost the async engine ~60% of its decode speed (engine/openmp_pool.py).
The checks count the process's native threads that are not Python threads (the OpenMP workers) in a
fresh subprocess, so no other test's threads interfere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from inference_pio.defaults import DefaultModelMissingError, default_model_path

SCRIPT = textwrap.dedent("""
    import asyncio, os, sys, threading, time
    import torch
    import inference_pio
    from inference_pio.engine import SamplingParams
    from inference_pio.engine.openmp_pool import release_openmp_pool

    def workers():  # native threads that are not Python threads: the OpenMP pools' workers
        return len(os.listdir("/proc/self/task")) - threading.active_count()

    def check(cond, what):
        if not cond:
            print("FAILED:", what, flush=True)
            sys.exit(1)

    model = inference_pio.load(sys.argv[1], enable_prefix_caching=False)
    after_load = workers()
    check(release_openmp_pool(), "omp_pause_resource_all was not found in the loaded OpenMP runtime")
    check(workers() == after_load, f"loading left an OpenMP pool alive ({after_load} -> {workers()} workers)")

    torch.ones(1 << 22).sum()  # a parallel region on this thread starts its pool...
    check(workers() == after_load + 1, f"expected one pool worker, have {workers() - after_load}")
    release_openmp_pool()  # ...and releasing it ends the worker
    check(workers() == after_load, f"release left {workers() - after_load} workers")

    engine = model.plugin.engine
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    engine.generate([[1, 2, 3, 4]], params)
    check(workers() == after_load, f"a blocking generate left {workers() - after_load} workers")

    async def stream():
        return [o async for o in model.async_engine().generate([1, 2, 3, 4], params)]
    check(len(asyncio.run(stream())) == 8, "the async request did not produce 8 outputs")
    deadline = time.monotonic() + 30
    while workers() != after_load and time.monotonic() < deadline:
        time.sleep(0.05)  # the engine thread releases its pool when it goes idle
    check(workers() == after_load, f"the idle async engine kept {workers() - after_load} workers")

    if len(sys.argv) > 2:  # an embedding model, embedding on a worker thread that outlives the call (a server's)
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(1) as pool:
            encoder = pool.submit(inference_pio.load, sys.argv[2]).result()
            check(workers() == after_load, f"loading on a worker thread left {workers() - after_load} workers")
            vectors = pool.submit(encoder.embed, ["a sentence " * 40] * 8).result()
            check(tuple(vectors.shape)[0] == 8, "the embedding model returned no vectors")
            check(workers() == after_load, f"embedding left {workers() - after_load} workers on its thread")
    print("OK", flush=True)
""")


@pytest.mark.slow
def test_each_thread_releases_its_openmp_pool_after_engine_work():
    try:
        path = default_model_path()
    except DefaultModelMissingError as exc:
        pytest.skip(f"needs the default model: {exc}")
    env = {**os.environ, "OMP_NUM_THREADS": "2",  # a pool has a worker even on a 1-CPU machine
           "TOKENIZERS_PARALLELISM": "false"}  # no Rust worker threads to tell apart from OpenMP ones
    from tests.server.serving import minilm_folder

    encoder = minilm_folder()  # the embedding checks need all-MiniLM-L6-v2 (installed with the tests)
    args = [str(path)] + ([str(encoder)] if encoder is not None else [])
    result = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, timeout=300,
                            env=env)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
