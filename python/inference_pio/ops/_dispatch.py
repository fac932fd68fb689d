"""Backend dispatch: which implementation of an op runs for given tensors.

Backends: ``reference`` (plain torch, the specification), ``cpu`` (C++), ``triton``,
``cuda`` (CUDA C++). By default the dispatcher picks by device and by what was built:
CPU tensors -> cpu; CUDA tensors -> triton, then cuda (the Triton kernels are checked through the
interpreter; the CUDA C++ ones are only compiled until a GPU run's results say which is faster per
op); ``reference`` is the last resort.
``use_backend("reference")`` (a context manager) or ``INFERENCE_PIO_BACKEND=...`` forces one;
a forced backend that cannot run raises instead of falling back.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.util
import os
import warnings
from collections.abc import Callable, Iterator

import torch

from .. import _native
# A backend cannot run these arguments; defined at the bottom so the Triton kernels raise it without importing us.
from ..errors import BackendUnsupported

BACKENDS = ("reference", "cpu", "triton", "cuda")
BACKEND_ENV = "INFERENCE_PIO_BACKEND"
_AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("triton", "cuda", "reference")}

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("inference_pio_backend", default=None)


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Forces every op called inside the block onto backend ``name`` (None: automatic)."""
    if name is not None and name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} or None, got {name!r}")
    token = _forced.set(name)
    try:
        yield
    finally:
        _forced.reset(token)


def forced_backend() -> str | None:
    name = _forced.get()
    if name is not None:
        return name
    env = os.environ.get(BACKEND_ENV) or None
    if env is not None and env not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={env!r} is not one of {', '.join(BACKENDS)}")
    return env


@functools.cache
def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def backend_runs_on(backend: str, device: torch.device) -> str | None:
    """None when ``backend`` can run on ``device``, else the reason it cannot."""
    if backend == "reference":
        return None
    if backend == "cpu":
        if device.type != "cpu":
            return f"the cpu backend needs CPU tensors, got {device.type} tensors"
        try:
            _native.cpu_module()
        except (_native.NativeUnavailable, ImportError) as e:
            return str(e)
        return None
    if backend == "triton":
        if not triton_available():
            return "triton is not installed"
        if device.type == "cuda" or (device.type == "cpu" and triton_interpreted()):
            return None
        return f"the triton backend needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors), got {device.type}"
    if backend == "cuda":
        if device.type != "cuda":
            return f"the cuda backend needs CUDA tensors, got {device.type} tensors"
        if _native.cuda_module() is None:
            return "this build has no CUDA extension (nvcc was not found when it was built)"
        return None
    return f"unknown backend {backend!r}"


class Op:
    """The backends of one op. Each implementation takes the op's validated arguments."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._impls: dict[str, Callable] = {}
        self._lazy: dict[str, str] = {}
        self._warned: set[str] = set()
        self._auto: dict[str, list[str]] = {}  # device type -> candidates when nothing is forced

    def register(self, backend: str, fn: Callable | None = None):
        """Registers ``fn`` as ``backend``'s implementation (usable as a decorator)."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}")

        def deco(f: Callable) -> Callable:
            self._impls[backend] = f
            self._auto.clear()
            return f

        return deco(fn) if fn is not None else deco

    def register_lazy(self, backend: str, target: str) -> None:
        """``target`` is "module:attribute", imported on first use (Triton kernels import triton)."""
        self._lazy[backend] = target
        self._auto.clear()

    def has(self, backend: str) -> bool:
        if backend in self._impls:
            return True
        target = self._lazy.get(backend)
        return target is not None and _module_exists(target.partition(":")[0])

    def backends(self) -> list[str]:
        return [b for b in BACKENDS if self.has(b)]

    def implementation(self, backend: str) -> Callable:
        fn = self._impls.get(backend)
        if fn is None:
            target = self._lazy.get(backend)
            if target is None:
                raise BackendUnsupported(f"{self.name} has no {backend} implementation")
            module, _, attr = target.partition(":")
            fn = getattr(importlib.import_module(module), attr)
            self._impls[backend] = fn
        return fn

    def candidates(self, device: torch.device) -> list[str]:
        """Backends to try, in order, for tensors on ``device``."""
        forced = forced_backend()
        if forced is not None:
            if not self.has(forced):
                raise BackendUnsupported(f"{self.name} has no {forced} implementation")
            reason = backend_runs_on(forced, device)
            if reason is not None:
                raise BackendUnsupported(f"{self.name}: backend {forced!r} cannot run here: {reason}")
            return [forced]
        cached = self._auto.get(device.type)
        if cached is None:
            order = _AUTO_ORDER.get(device.type, ("reference",))
            cached = [b for b in order if self.has(b) and backend_runs_on(b, device) is None]
            if device.type != "cpu" or not triton_interpreted():  # the interpreter flag may change in tests
                self._auto[device.type] = cached
        return cached

    def __call__(self, device: torch.device, *args, **kwargs):
        candidates = self.candidates(device)
        for i, backend in enumerate(candidates):
            try:
                return self.implementation(backend)(*args, **kwargs)
            except BackendUnsupported as e:
                if len(candidates) == 1 or i == len(candidates) - 1:
                    raise
                if backend not in self._warned:  # say so once instead of silently running slower
                    self._warned.add(backend)
                    warnings.warn(f"{e}; falling back to the {candidates[i + 1]} backend", stacklevel=3)
        raise BackendUnsupported(f"{self.name}: no backend can run on {device}")


@functools.cache
def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


_OPS: dict[str, Op] = {}


def op(name: str) -> Op:
    """The dispatcher of op ``name`` (created on first use)."""
    if name not in _OPS:
        _OPS[name] = Op(name)
    return _OPS[name]


def all_ops() -> dict[str, Op]:
    return dict(_OPS)
