"""Warm-up at load, so the first request runs at the speed of the ones after it.

Weights are memory-mapped (GGUF, safetensors): until a page is first read, reading it faults it in
from the page cache or the disk, inside the first request's kernels. Then the first decode step
builds the fused decode plan and its buffers, starts the OpenMP pool and sizes the kernels'
per-thread scratch. ``warm_up`` does all of that at load: it reads one byte of every page of every
weight, then runs one prefill token and one decode step on a scratch sequence of the engine's KV
cache (freed again; the prefix cache and the engine's counters never see it).
``INFERENCE_PIO_WARMUP=0`` turns it off.
"""

from __future__ import annotations

import os
import warnings

import torch
import torch.nn as nn

from .openmp_pool import release_openmp_pool

WARMUP_ENV = "INFERENCE_PIO_WARMUP"
PAGE_BYTES = 4096


def warm_up_enabled() -> bool:
    return os.environ.get(WARMUP_ENV, "1") != "0"


def _tensors(model: nn.Module):
    """Every CPU tensor the model computes with: parameters, buffers and quantized blocks."""
    for module in model.modules():
        yield from module.parameters(recurse=False)
        yield from module.buffers(recurse=False)
        blocks = getattr(getattr(module, "qweight", None), "data", None)
        if isinstance(blocks, torch.Tensor):
            yield blocks


def prefault(model: nn.Module) -> int:
    """Reads one byte of every page of the model's CPU tensors (their whole storages); returns the
    bytes covered. Storages shared by several tensors are read once."""
    seen, total = set(), 0
    for t in _tensors(model):
        if t.device.type != "cpu":
            continue
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key in seen or storage.nbytes() == 0:
            continue
        seen.add(key)
        data = torch.empty(0, dtype=torch.uint8).set_(storage)
        data[::PAGE_BYTES].sum()  # a strided read: one load per page (torch spreads it over threads)
        total += storage.nbytes()
    return total


def warm_up(engine) -> None:
    """Pre-faults ``engine.model``'s weights and runs one decode step through it (see the module
    docstring). A model that cannot run the step gets a warning here and fails on its first request."""
    if not warm_up_enabled():
        return
    model, cache = getattr(engine, "model", None), getattr(engine, "kv_cache", None)
    if not isinstance(model, nn.Module):
        return
    prefault(model)
    if cache is None:
        release_openmp_pool()
        return
    seq = object()
    try:
        with torch.no_grad():  # as the models step: inference_mode would mark buffers made here read-only to later steps
            ids = torch.zeros(1, dtype=torch.int64, device=cache.device)
            cache.allocate(seq, 1)
            meta = cache.build_metadata([seq], [1])
            model(ids, torch.zeros(1, dtype=torch.int64, device=cache.device), meta, cache.key_caches,
                  cache.value_caches)
            cache.append_slots(seq, 1)
            meta = cache.build_metadata([seq], [1])  # one new token of a sequence with one cached: decode
            model(ids, torch.ones(1, dtype=torch.int64, device=cache.device), meta, cache.key_caches,
                  cache.value_caches)
    except Exception as e:  # noqa: BLE001 - a warm-up is an optimisation: report, never fail the load
        warnings.warn(f"warm-up at load skipped ({type(e).__name__}: {e}); the first request will be slower",
                      stacklevel=2)
    finally:
        if seq in cache:
            cache.free(seq)
        release_openmp_pool()  # loading and warm-up are done on this thread (openmp_pool.py)
