"""``python -m inference_pio doctor``: what this installation can run."""

from __future__ import annotations

import os
import platform
import sys

import torch

from . import __version__, _native
from .ops import _dispatch


def _cpu_backend() -> dict:
    try:
        mod = _native.cpu_module()
    except (_native.NativeUnavailable, ImportError) as e:
        return {"available": False, "reason": str(e)}
    return {
        "available": True,
        "isa": mod.isa,
        "supported_isas": _native.supported_cpu_isas(),
        "built_isas": _native.built_cpu_isas(),
        "threads": mod.num_threads(),
        "openmp": bool(mod.openmp),
    }


def _cuda_backend() -> dict:
    mod = _native.cuda_module()
    if mod is None:
        return {"built": False}
    return {"built": True, "archs": mod.archs, "cuda_runtime": mod.cuda_runtime_version, "devices": mod.device_count()}


def _triton() -> dict:
    if not _dispatch.triton_available():
        return {"installed": False}
    import triton

    return {"installed": True, "version": triton.__version__, "interpreter": _dispatch.triton_interpreted()}


def collect() -> dict:
    """Everything doctor reports, as plain data (also used by tests)."""
    gpu = torch.cuda.is_available()
    return {
        "inference_pio": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cpu": _cpu_backend(),
        "cuda_extension": _cuda_backend(),
        "triton": _triton(),
        "gpu": torch.cuda.get_device_name(0) if gpu else None,
        "forced_backend": os.environ.get(_dispatch.BACKEND_ENV),
        "ops": {name: op.backends() for name, op in sorted(_dispatch.all_ops().items())},
    }


def format_report(info: dict) -> str:
    cpu, cuda, tri = info["cpu"], info["cuda_extension"], info["triton"]
    lines = [
        f"inference-pio {info['inference_pio']}  (python {info['python']}, torch {info['torch']})",
        f"platform      {info['platform']}",
    ]
    if cpu["available"]:
        lines.append(
            f"cpu backend   yes: {cpu['isa']} kernels (CPU supports {', '.join(cpu['supported_isas'])}; "
            f"built {', '.join(cpu['built_isas'])}), {cpu['threads']} threads, OpenMP {'on' if cpu['openmp'] else 'off'}"
        )
    else:
        lines.append(f"cpu backend   no: {cpu['reason']}")
    if cuda["built"]:
        lines.append(f"cuda backend  built for {cuda['archs']} (CUDA runtime {cuda['cuda_runtime']}), {cuda['devices']} device(s) visible")
    else:
        lines.append("cuda backend  not built (no nvcc when this was installed)")
    if tri["installed"]:
        mode = ", interpreter (TRITON_INTERPRET=1)" if tri["interpreter"] else ""
        lines.append(f"triton        {tri['version']}{mode}")
    else:
        lines.append("triton        not installed")
    lines.append(f"gpu           {info['gpu'] or 'none visible'}")
    if info["forced_backend"]:
        lines.append(f"forced        {_dispatch.BACKEND_ENV}={info['forced_backend']}")
    lines.append("ops           " + "; ".join(f"{name}: {', '.join(b)}" for name, b in info["ops"].items()))
    return "\n".join(lines)


def main() -> int:
    print(format_report(collect()))
    return 0
