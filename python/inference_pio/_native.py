"""Loading the compiled extension modules.

The CPU kernels are built once per instruction set (``_cpu_avx2``, ``_cpu_avx512``,
``_cpu_avx512bf16``); ``_cpuinfo``, built without ISA flags, tells which ones this CPU can
run, and the best one is imported. ``INFERENCE_PIO_CPU_ISA`` caps the choice (for tests and
for comparing ISAs). The CUDA module ``_cuda`` exists only when the build found nvcc.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

import torch  # noqa: F401  (loads libgomp before our OpenMP-linked modules)

CPU_ISA_ENV = "INFERENCE_PIO_CPU_ISA"
ISA_PREFERENCE = ("avx512bf16", "avx512", "avx2")


class NativeUnavailable(RuntimeError):
    """A compiled backend cannot be used here; the message says why."""


@functools.cache
def _cpuinfo() -> ModuleType | None:
    try:
        return importlib.import_module("inference_pio._cpuinfo")
    except ImportError:
        return None


def built_cpu_isas() -> list[str]:
    info = _cpuinfo()
    return list(info.built_isas) if info else []


def supported_cpu_isas() -> list[str]:
    """ISAs that were built and that this CPU runs, best first."""
    info = _cpuinfo()
    if info is None:
        return []
    built = set(info.built_isas)
    return [isa for isa in ISA_PREFERENCE if isa in built and info.supports(isa)]


def _choose_isa(requested: str | None) -> str:
    supported = supported_cpu_isas()
    if _cpuinfo() is None:
        raise NativeUnavailable("the C++ extension is not built (inference_pio._cpuinfo is missing); reinstall with pip")
    if not supported:
        raise NativeUnavailable("this CPU lacks AVX2+FMA, the minimum the C++ CPU kernels need; use backend='reference'")
    if requested:
        if requested not in ISA_PREFERENCE:
            raise NativeUnavailable(f"{CPU_ISA_ENV}={requested!r} is not one of {', '.join(ISA_PREFERENCE)}")
        # A cap: the best supported ISA at or below the requested one.
        allowed = ISA_PREFERENCE[ISA_PREFERENCE.index(requested):]
        for isa in supported:
            if isa in allowed:
                return isa
        raise NativeUnavailable(f"{CPU_ISA_ENV}={requested!r}: this CPU supports only {', '.join(supported)}")
    return supported[0]


@functools.cache
def cpu_module(isa: str | None = None) -> ModuleType:
    """The CPU kernel module for ``isa`` (default: the best this CPU runs, capped by the env var)."""
    chosen = _choose_isa(isa or os.environ.get(CPU_ISA_ENV) or None)
    return importlib.import_module(f"inference_pio._cpu_{chosen}")


def cpu_available() -> bool:
    try:
        cpu_module()
        return True
    except (NativeUnavailable, ImportError):
        return False


@functools.cache
def cuda_module() -> ModuleType | None:
    """The CUDA kernel module, or None when the build had no nvcc."""
    try:
        return importlib.import_module("inference_pio._cuda")
    except ImportError:
        return None
