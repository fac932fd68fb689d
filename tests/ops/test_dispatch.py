"""Backend selection: automatic by device, forced by context manager or environment variable."""

import os
import subprocess
import sys

import pytest
import torch

from inference_pio import ops
from inference_pio.ops import _dispatch


def test_use_backend_forces_reference(monkeypatch):
    calls = []
    op = _dispatch.op("rms_norm")
    real = op.implementation("reference")
    monkeypatch.setitem(op._impls, "reference", lambda *a: (calls.append(1), real(*a)))
    with ops.use_backend("reference"):
        ops.rms_norm(torch.randn(2, 8), torch.ones(8))
    assert calls == [1]
    ops.rms_norm(torch.randn(2, 8), torch.ones(8))  # back to automatic: cpu
    assert calls == [1]


def test_unknown_backend_name_is_rejected():
    with pytest.raises(ValueError, match="backend must be one of"):
        with ops.use_backend("tpu"):
            pass


def test_forced_backend_that_cannot_run_here_raises():
    if torch.cuda.is_available():
        pytest.skip("needs a machine without a GPU")
    with ops.use_backend("cuda"):
        with pytest.raises(ops.BackendUnsupported, match="cuda"):
            ops.rms_norm(torch.randn(2, 8), torch.ones(8))


def test_cuda_tensor_to_cpu_backend_names_the_problem():
    reason = _dispatch.backend_runs_on("cpu", torch.device("cuda", 0))
    assert reason is not None and "CPU tensors" in reason


def test_env_var_forces_backend():
    code = (
        "import torch, inference_pio.ops as ops\n"
        "from inference_pio.ops import _dispatch\n"
        "print(_dispatch.op('rms_norm').candidates(torch.device('cpu')))\n"
    )
    env = dict(os.environ, INFERENCE_PIO_BACKEND="reference")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "['reference']"


def test_unsupported_arguments_fall_back_with_a_warning(monkeypatch):
    op = _dispatch.op("rms_norm")
    monkeypatch.setattr(op, "_warned", set())

    def refuse(*args):
        raise ops.BackendUnsupported("rms_norm: pretend this shape is unsupported by cpu")

    monkeypatch.setitem(op._impls, "cpu", refuse)
    with pytest.warns(UserWarning, match="falling back to the reference backend"):
        out = ops.rms_norm(torch.randn(3, 8), torch.ones(8))
    assert torch.isfinite(out).all()
    with ops.use_backend("cpu"), pytest.raises(ops.BackendUnsupported, match="pretend"):
        ops.rms_norm(torch.randn(3, 8), torch.ones(8))
