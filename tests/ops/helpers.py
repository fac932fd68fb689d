"""Helpers for op tests: which backends can run here, poisoned outputs, comparison to float64."""

from __future__ import annotations

import pytest
import torch

from inference_pio.ops import _dispatch
from .tolerances import TOLERANCES

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def device_under_test() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def runnable_backends(op_name: str, device: torch.device | None = None) -> list:
    """pytest params for every backend of ``op_name`` except reference; unrunnable ones skip with the reason."""
    device = device or device_under_test()
    op = _dispatch.op(op_name)
    params = []
    for backend in ("cpu", "triton", "cuda"):
        reason = _dispatch.backend_runs_on(backend, device)
        marks = []
        if not op.has(backend):
            marks = [pytest.mark.skip(reason=f"{op_name} has no {backend} backend yet")]
        elif reason is not None:
            marks = [pytest.mark.skip(reason=reason)]
        params.append(pytest.param(backend, marks=marks, id=backend))
    return params


def poisoned_like(t: torch.Tensor) -> torch.Tensor:
    """A NaN-filled tensor: any element the kernel forgets to write fails the comparison."""
    return torch.full_like(t, float("nan"))


def assert_close(actual: torch.Tensor, expected64: torch.Tensor, dtype: torch.dtype, tolerances=TOLERANCES, msg: str = "") -> None:
    atol, rtol = tolerances[dtype]
    torch.testing.assert_close(actual.double(), expected64.double(), atol=atol, rtol=rtol, msg=msg or None)


def randn(*shape, dtype=torch.float32, device=None, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape, dtype=torch.float32, device=device or device_under_test()) * scale).to(dtype)


def interpreted(backend: str) -> bool:
    """True when ``backend`` runs through Triton's (slow) CPU interpreter: tests then keep sizes small."""
    import os

    return backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1"


def skip_if_interpreted_and_large(backend: str, work: int, limit: int = 1 << 16) -> None:
    """Skips a case whose ``work`` (e.g. tokens x heads x head_dim) is too big for the interpreter."""
    if interpreted(backend) and work > limit:
        pytest.skip(f"too large for the Triton interpreter ({work} > {limit}); runs on a GPU")


def skip_if_interpreted_bf16_dot(backend: str, dtype: torch.dtype) -> None:
    """Triton's CPU interpreter returns garbage for bfloat16 tl.dot (attention kernels use it);
    those cases run on a GPU, and compile for sm_80/sm_90 in tests/kernels/test_triton_compile.py."""
    if interpreted(backend) and dtype == torch.bfloat16:
        pytest.skip("bfloat16 tl.dot is unsupported by Triton's CPU interpreter; runs on a GPU")
