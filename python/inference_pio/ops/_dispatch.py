"""Backend dispatch: which implementation of an op runs for given tensors.

Backends: ``reference`` (plain torch, the specification), ``cpu`` (C++), ``triton``,
``cuda`` (CUDA C++). By default the dispatcher picks by device and by what was built:
CPU tensors -> cpu; CUDA tensors -> triton, then cuda (the Triton kernels are checked through the
interpreter; the CUDA C++ ones are only compiled until a GPU run's results say which is faster per
op); ``reference`` is the last resort.
``use_backend("reference")`` (a context manager) or ``INFERENCE_PIO_BACKEND=...`` (read when this
module is imported) forces one; a forced backend that cannot run raises instead of falling back.

Every routing decision is made here:
- by device: ``Op.candidates`` (above);
- by shape: an op with a torch route (``Op.set_torch_route``: linear, quantized_linear) hands inputs
  of more than ``*_KERNEL_MAX_ROWS`` rows to torch's matmul when nothing is forced, and so it does on
  a device where none of its kernels runs (``takes_torch_route``);
- under ``torch.compile``: ``automatic()`` is False while tracing, and the ops call their
  ``torch.library`` custom ops instead of the kernels;
- for layers: ``Op.automatic_backend`` is the backend the automatic routing picks on a device, which
  a layer's handle (``ops.linear.LinearHandle``, ``ops.quantized_linear.QuantizedLinearHandle``)
  resolves once and then calls while ``automatic()`` holds and the rows are within the kernel's.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import importlib.util
import inspect
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
# Read once: os.environ.get costs about as much as a decode-sized kernel call's whole Python side.
_env_forced: str | None = os.environ.get(BACKEND_ENV) or None

#: Rows (x's leading dimensions merged) up to which ``linear`` runs the CPU kernel when nothing is
#: forced; more rows (prefill) go to torch's matmul, which blocks for cache reuse (ops/linear.py).
LINEAR_KERNEL_MAX_ROWS = 16
#: The same for ``quantized_linear``: more rows go through dequantized weight tiles and torch's
#: matmul (ops/quantized_linear.py). A block kernel that beats that for more rows raises this value.
QUANTIZED_LINEAR_KERNEL_MAX_ROWS = 16


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
    """The backend ``use_backend`` (innermost) or ``INFERENCE_PIO_BACKEND`` forces, or None."""
    name = _forced.get()
    if name is not None:
        return name
    if _env_forced is not None and _env_forced not in BACKENDS:
        raise ValueError(f"{BACKEND_ENV}={_env_forced!r} is not one of {', '.join(BACKENDS)}")
    return _env_forced


def automatic() -> bool:
    """True when the automatic routing applies: nothing forces a backend and torch.compile is not tracing.
    The layers' handles ask this on every call, so it is kept to two cheap reads."""
    # is_compiling first: tracing folds it to a constant and never reaches the context variable.
    return not torch.compiler.is_compiling() and _forced.get() is None and _env_forced is None


def cpu_kernels_may_run(device: torch.device) -> bool:
    """Whether C++ CPU kernels may run for tensors on ``device``: a CPU device, nothing but ``cpu``
    forced, not tracing under torch.compile (the fused decode step asks this)."""
    return device.type == "cpu" and not torch.compiler.is_compiling() and forced_backend() in (None, "cpu")


def traced_as_custom_op(name: str) -> Callable[[Callable], Callable]:
    """Decorates an op's public function: while torch.compile traces, a call becomes the custom op
    ``torch.ops.inference_pio.<name>`` (registered at the end of the op's module with the public
    function's parameters in order, less ``out``) instead of running the kernels, which tracing cannot
    see into; a given ``out`` receives its result. Eager calls run the function itself."""

    def decorate(fn: Callable) -> Callable:
        params = [p for p in inspect.signature(fn).parameters.values() if p.name != "out"]
        names = tuple(p.name for p in params)
        defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}

        def traced(*args, **kwargs):
            values = {**defaults, **dict(zip(names, args)), **kwargs}
            out = values.pop("out", None)
            result = getattr(torch.ops.inference_pio, name)(*[values[n] for n in names])
            return result if out is None or result is None else out.copy_(result)

        @functools.wraps(fn)
        def op(*args, **kwargs):
            if torch.compiler.is_compiling():
                return traced(*args, **kwargs)
            return fn(*args, **kwargs)

        return op

    return decorate


def takes_torch_route(op_name: str, device: torch.device, rows: int, *, integer_inputs: bool = False) -> bool:
    """Whether op ``op_name``'s call with ``rows`` rows on ``device`` goes to torch's own
    implementation instead of a backend (see ``Op.set_torch_route``). ``integer_inputs``:
    quantized_linear with int16 / int8 activations, whose kernel switches to an integer GEMM for
    many rows (csrc/kernels/cpu/quantized_gemm.h) that outruns dequantized tiles + torch's matmul at
    every M: the row count never sends it to torch."""
    return _OPS[op_name].takes_torch_route(device, rows, integer_inputs)


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
        self.kernel_max_rows: int | None = None  # set with the torch route
        self._torch_route_needs: str | None = None

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

    def set_torch_route(self, kernel_max_rows: int, needs: str | None = None) -> None:
        """Gives the op a route to torch's matmul (the op module calls it itself), taken when nothing
        is forced for inputs of more than ``kernel_max_rows`` rows, or where no kernel backend of the
        op runs on the device, and at every size when the forced backend is one the op does not have
        (a model run under ``use_backend("triton")``: no Triton linear, so torch's). A forced backend
        the op has runs every size. ``needs``: a backend that must run on the device for the route to
        exist (quantized_linear's tiles are dequantized by the cpu kernels)."""
        self.kernel_max_rows = kernel_max_rows
        self._torch_route_needs = needs

    def takes_torch_route(self, device: torch.device, rows: int, integer_inputs: bool = False) -> bool:
        if self.kernel_max_rows is None:
            return False
        forced = forced_backend()
        if forced is not None and self.has(forced):
            return False
        if self._torch_route_needs is not None and backend_runs_on(self._torch_route_needs, device) is not None:
            return False
        return (forced is not None or (rows > self.kernel_max_rows and not integer_inputs)
                or self.automatic_backend(device) in (None, "reference"))

    def automatic_backend(self, device: torch.device) -> str | None:
        """The backend the automatic routing tries first on ``device`` (None: none can run)."""
        order = self._automatic_candidates(device)
        return order[0] if order else None

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
        return self._automatic_candidates(device)

    def _automatic_candidates(self, device: torch.device) -> list[str]:
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
