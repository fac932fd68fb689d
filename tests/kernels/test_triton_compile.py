"""Compiles every Triton kernel for real (sm_80 and sm_90 cubins) with the launch configs the
launchers use: catches the compile errors, type mismatches and shared-memory overflows that the
interpreter cannot. No GPU needed.

``@triton.jit`` builds interpreter objects when TRITON_INTERPRET=1 (set by tests/conftest.py), so
each kernel family compiles in a child process started without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Opt-in shared memory per block (bytes): A100 (sm_80) and H100 (sm_90).
SHARED_LIMIT = {80: 166912, 90: 232448}
FLOAT_ARGS = {"eps", "qk_scale"}
INDEX_POINTERS = {"bt_ptr", "ctx_ptr", "cu_q_ptr", "cu_k_ptr", "pos_ptr", "slot_ptr"}
WORKSPACE_POINTERS = {"part_out_ptr", "part_m_ptr", "part_l_ptr"}
HEAD_DIMS = (64, 80, 96, 128, 256)
# (arch, dtype) pairs cycled over head dims: each head dim compiles once, each pair is covered.
SAMPLES = [(80, "fp16"), (90, "bf16"), (80, "bf16"), (90, "fp16")]


def _cases(family: str) -> list[tuple[str, object, dict, dict, int, dict]]:
    """(label, kernel, pointer dtypes, constexprs, arch, options) for one kernel family (child process)."""
    from inference_pio.kernels import activation, kv_cache, paged_decode_attention as dec, prefill_attention as pre, rms_norm, rotary_embedding

    cases = []
    if family == "rms_norm":
        for hidden, arch, dt, w in [(2048, 80, "fp16", "fp16"), (14336, 90, "bf16", "fp32")]:  # one-pass, chunked
            cfg = rms_norm.launch_config(hidden)
            ptrs = {"w_ptr": "*" + w}
            for add in (False, True):
                cases.append((f"rms_norm h{hidden} add={add} sm{arch} {dt}", rms_norm._rms_norm_kernel, ptrs,
                               dict(cfg, ADD_RESIDUAL=add), arch, dt))
    elif family == "activation":
        for act, arch, dt in [(activation.SILU, 90, "bf16"), (activation.GELU_ERF, 80, "fp16"), (activation.GELU_TANH, 90, "fp16")]:
            cases.append((f"gated act{act} sm{arch} {dt}", activation._gated_kernel, {}, dict(activation.launch_config(11008), ACT=act), arch, dt))
    elif family == "rotary_embedding":
        for (arch, dt), d, neox, cache in zip(SAMPLES, (128, 64, 80, 128), (True, False, True, False), ("fp32", "bf16", "fp32", "fp16")):
            cfg = dict(rotary_embedding.launch_config(32, 8, d), HAS_KEY=neox, IS_NEOX=neox)
            cases.append((f"rotary d{d} neox={neox} sm{arch} {dt}", rotary_embedding._rotary_kernel, {"cache_ptr": "*" + cache}, cfg, arch, dt))
    elif family == "kv_cache":
        for (arch, dt), d in zip(SAMPLES, (128, 80, 256, 64)):
            cases.append((f"reshape_and_cache d{d} sm{arch} {dt}", kv_cache._reshape_and_cache_kernel, {}, kv_cache.launch_config(8, d), arch, dt))
    elif family == "paged_decode_attention":
        for i, d in enumerate(HEAD_DIMS):
            arch, dt = SAMPLES[i % len(SAMPLES)]
            split, window = i % 2 == 0, i == 1
            cfg = dict(dec.launch_config(d, 4, dec.DEFAULT_PARTITION, interpret=False), HAS_WINDOW=window, SPLIT=split,
                       PARTITION=dec.DEFAULT_PARTITION, DOT_PRECISION="tf32")
            cases.append((f"decode d{d} split={split} sm{arch} {dt}", dec._decode_kernel, {}, cfg, arch, dt))
        cfg = dict(dec.launch_config(128, 8, dec.DEFAULT_PARTITION, interpret=False), HAS_WINDOW=False, SPLIT=True,
                   PARTITION=dec.DEFAULT_PARTITION, DOT_PRECISION="ieee")
        cases.append(("decode d128 group8 fp32 sm90", dec._decode_kernel, {}, cfg, 90, "fp32"))
        cases.append(("merge d128 sm90 bf16", dec._merge_partitions_kernel, {"part_out_ptr": "*fp32"},
                      dict(BLOCK_P=dec.REDUCE_BLOCK_P, BLOCK_D=128, num_warps=4), 90, "bf16"))
    elif family == "prefill_attention":
        for i, d in enumerate(HEAD_DIMS):  # d256 lands on sm80: the largest tiles vs A100's shared memory
            arch, dt = SAMPLES[i % len(SAMPLES)]
            cfg = dict(pre.launch_config(d, interpret=False), CAUSAL=i != 2, HAS_WINDOW=i == 1, PAGED=i == 3,
                       DOT_PRECISION="tf32")
            cases.append((f"prefill d{d} sm{arch} {dt} paged={i == 3}", pre._prefill_kernel, {}, cfg, arch, dt))
        cfg = dict(pre.launch_config(128, interpret=False), CAUSAL=True, HAS_WINDOW=False, PAGED=False, DOT_PRECISION="ieee")
        cases.append(("prefill d128 sm90 fp32", pre._prefill_kernel, {}, cfg, 90, "fp32"))
    return cases


def compile_family(family: str) -> list[dict]:
    """Child-process entry: compiles each case, returns label, arch and shared-memory bytes."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    results = []
    for label, kernel, pointers, config, arch, dtype in _cases(family):
        config = dict(config)
        options = {k: config.pop(k) for k in ("num_warps", "num_stages") if k in config}
        signature = {}
        for name in kernel.arg_names:
            if name in config:
                signature[name] = "constexpr"
            elif name in pointers:
                signature[name] = pointers[name]
            elif name in INDEX_POINTERS:
                signature[name] = "*i32"
            elif name in WORKSPACE_POINTERS:
                signature[name] = "*fp32"
            elif name.endswith("_ptr"):
                signature[name] = "*" + dtype
            else:
                signature[name] = "fp32" if name in FLOAT_ARGS else "i32"
        compiled = triton.compile(ASTSource(kernel, signature, config), target=GPUTarget("cuda", arch, 32), options=options)
        results.append({"label": label, "arch": arch, "shared": compiled.metadata.shared})
    return results


FAMILIES = ["rms_norm", "activation", "rotary_embedding", "kv_cache", "paged_decode_attention", "prefill_attention"]


def _compile_api_missing() -> str | None:
    try:
        import triton
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError as e:
        return f"triton's compile API is unavailable: {e}"
    if "nvidia" not in getattr(triton.backends, "backends", {}):
        return "triton has no NVIDIA backend here"
    return None


@pytest.mark.parametrize("family", FAMILIES)
def test_kernels_compile_for_sm80_and_sm90(family):
    reason = _compile_api_missing()
    if reason:
        pytest.skip(reason)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silences triton 3.9's warning; keeps today's default
    proc = subprocess.run([sys.executable, __file__, family], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results, f"no {family} kernels were compiled"
    archs = {r["arch"] for r in results}
    assert archs == {80, 90}, archs
    for r in results:
        assert r["shared"] <= SHARED_LIMIT[r["arch"]], f"{r['label']} needs {r['shared']} bytes of shared memory"


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    print(json.dumps(compile_family(sys.argv[1])))
