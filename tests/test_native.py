"""Choosing the CPU kernel module by ISA at run time."""

import os
import subprocess
import sys

import pytest
import torch

from inference_pio import _native
from inference_pio.ops import _tensor
from inference_pio.ops.rms_norm import rms_norm_reference


def test_best_isa_is_chosen_by_default():
    supported = _native.supported_cpu_isas()
    assert supported, "this test machine runs at least AVX2"
    assert _native.cpu_module().isa == supported[0]


@pytest.mark.parametrize("isa", _native.ISA_PREFERENCE)
def test_every_supported_isa_module_computes_the_same(isa):
    if isa not in _native.supported_cpu_isas():
        pytest.skip(f"this CPU cannot run {isa}")
    mod = _native.cpu_module(isa)
    assert mod.isa == isa
    x = torch.randn(5, 333, dtype=torch.bfloat16)
    w = torch.randn(333, dtype=torch.bfloat16)
    out = torch.full_like(x, float("nan"))
    mod.rms_norm(_tensor.view(out), _tensor.view(x), _tensor.view(w), 1e-6)
    torch.testing.assert_close(out.double(), rms_norm_reference(x.double(), w.double(), 1e-6), atol=1.6e-2, rtol=1.6e-2)


def _isa_in_subprocess(value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, **{_native.CPU_ISA_ENV: value})
    code = "from inference_pio import _native; print(_native.cpu_module().isa)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_env_var_caps_the_isa():
    proc = _isa_in_subprocess("avx2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "avx2"


def test_unknown_isa_in_env_var_is_a_clear_error():
    proc = _isa_in_subprocess("sse9")
    assert proc.returncode != 0
    assert "INFERENCE_PIO_CPU_ISA='sse9' is not one of" in proc.stderr


def test_cpu_kernels_reject_cuda_views():
    x = torch.randn(2, 16)
    fake_cuda = (x.data_ptr(), 0, (2, 16), (16, 1), 1, 0, 0)  # a view claiming to live on a GPU
    with pytest.raises(ValueError, match="out must be a CPU tensor"):
        _native.cpu_module().rms_norm(fake_cuda, _tensor.view(x), _tensor.view(torch.ones(16)), 1e-6)


def test_cuda_extension_reports_its_architectures():
    mod = _native.cuda_module()
    if mod is None:
        pytest.skip("built without nvcc: no CUDA extension")
    archs = mod.archs.split(",")
    assert any(a.startswith("80") for a in archs) and any(a.startswith("90") for a in archs), archs


def test_cuda_kernels_validate_views_without_a_gpu():
    """The CUDA entry points check their views before touching a device: CPU views are refused by name."""
    mod = _native.cuda_module()
    if mod is None:
        pytest.skip("this build has no CUDA extension")
    x = torch.randn(2, 16)
    v = _tensor.view
    with pytest.raises(ValueError, match="x must be a CUDA tensor"):
        mod.rms_norm(v(torch.empty_like(x)), v(x), v(torch.ones(16)), 1e-6)
    with pytest.raises(ValueError, match="x must be a CUDA tensor"):
        mod.silu_and_mul(v(torch.empty(2, 8)), v(x))
    q = torch.randn(1, 4, 64)
    cache = torch.zeros(2, 16, 2, 64)
    with pytest.raises(ValueError, match="query must be a CUDA tensor"):
        mod.paged_decode_attention(v(q), v(q), v(cache), v(cache), v(torch.zeros(1, 2, dtype=torch.int32)),
                                   v(torch.ones(1, dtype=torch.int32)), 0.125, None, 16)
    cu = torch.tensor([0, 1], dtype=torch.int32)
    with pytest.raises(ValueError, match="query must be a CUDA tensor"):
        mod.prefill_attention(v(q), v(q), v(q[:, :2]), v(q[:, :2]), v(cu), v(cu), True, 0.125, None, None, 1)
