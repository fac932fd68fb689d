"""Benchmark fixtures: the machine's measured copy bandwidth, and ``record`` to attach bytes and
FLOPs to a benchmark so the report can state GB/s and the fraction of the bandwidth bound.

Run: ``pytest benchmarks/ops --benchmark-warmup=on --benchmark-json=benchmarks/results/cpu.json``
then ``python benchmarks/report.py benchmarks/results/cpu.json``.
"""

from __future__ import annotations

import os
import time

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def measure_copy_bandwidth_gbs(nbytes: int = 256 << 20, repeats: int = 5) -> float:
    """Best-of-N large buffer copy: bytes read + bytes written per second (the ceiling for memory-bound ops)."""
    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best / 1e9


@pytest.fixture(scope="session")
def copy_bandwidth_gbs() -> float:
    return measure_copy_bandwidth_gbs()


@pytest.fixture
def record(benchmark, copy_bandwidth_gbs):
    """``record(bytes_moved=..., flops=..., backend=..., shape=...)`` after ``benchmark(...)``."""

    def _record(*, backend: str, shape: str, bytes_moved: int | None = None, flops: int | None = None) -> None:
        info = benchmark.extra_info
        info.update(backend=backend, shape=shape, copy_bandwidth_gbs=round(copy_bandwidth_gbs, 2), threads=torch.get_num_threads())
        stats = benchmark.stats.stats if benchmark.stats else None
        if stats is None:  # --benchmark-disable: nothing was timed
            return
        seconds = stats.median
        if bytes_moved:
            info["bytes"] = bytes_moved
            info["gbs"] = round(bytes_moved / seconds / 1e9, 3)
            info["fraction_of_copy_bw"] = round(info["gbs"] / copy_bandwidth_gbs, 3)
        if flops:
            info["flops"] = flops
            info["gflops"] = round(flops / seconds / 1e9, 3)

    return _record
