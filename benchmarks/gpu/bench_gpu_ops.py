"""GPU op benchmark: the Triton kernels (and the CUDA C++ backend when built) against torch eager,
SDPA (flash backend) for prefill and repeat-KV + SDPA for decode, at Llama-3-8B-like shapes
(hidden 4096, 32 query / 8 KV heads, head dim 128, batch 1-64, contexts 1k-32k).

It first measures the device's ceilings (device-to-device copy bandwidth, bf16 matmul TFLOP/s),
then reports each op's GB/s (memory-bound ops, decode) or TFLOP/s (prefill) and its fraction of
the ceiling, and writes everything to a markdown file:

    python benchmarks/gpu/bench_gpu_ops.py --out benchmarks/results/gpu-<device>-<date>.md

Needs a CUDA device; ``--help`` works anywhere. Times are medians of triton.testing.do_bench
(which flushes L2 between runs). Not a pytest module (no test_ functions).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, INTERMEDIATE = 4096, 32, 8, 128, 14336
BLOCK_SIZE = 16
DTYPE = torch.bfloat16
EPS = 1e-6


@dataclass
class Row:
    op: str
    shape: str
    impl: str
    ms: float
    work: float  # bytes moved or FLOPs
    unit: str  # "GB/s" or "TFLOP/s"
    note: str = ""


@dataclass
class Report:
    ceilings: dict = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="markdown results file (default: benchmarks/results/gpu-<device>-<date>.md)")
    p.add_argument("--ops", default="all",
                   help="comma-separated subset of: rms_norm,fused_add_rms_norm,silu_and_mul,rotary_embedding,"
                        "reshape_and_cache,paged_decode_attention,prefill_attention")
    p.add_argument("--quick", action="store_true", help="fewer shapes and repetitions (a smoke run)")
    p.add_argument("--rep-ms", type=int, default=100, help="do_bench measuring time per case in ms")
    return p.parse_args(argv)


def bench(fn: Callable[[], object], rep_ms: int) -> float:
    import triton.testing

    return triton.testing.do_bench(fn, warmup=25, rep=rep_ms, return_mode="median")


def measure_ceilings(rep_ms: int) -> dict:
    """Copy bandwidth (bytes read + written per second over a 1 GiB copy) and bf16 matmul TFLOP/s."""
    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda").fill_(1.0)
    dst = torch.empty_like(src)
    copy_ms = bench(lambda: dst.copy_(src), rep_ms)
    n = 8192
    a = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    b = torch.randn(n, n, dtype=torch.bfloat16, device="cuda")
    mm_ms = bench(lambda: a @ b, rep_ms)
    del src, dst, a, b
    return {"copy_gbs": 2 * (1 << 30) / copy_ms / 1e6, "matmul_tflops": 2 * n**3 / mm_ms / 1e9}


def cuda_backend(op_name: str) -> Callable | None:
    """The CUDA C++ backend of ``op_name`` (same call convention as the Triton one), when built."""
    try:
        import inference_pio.ops  # noqa: F401  (registers the op modules present in this checkout)
        from inference_pio.ops import _dispatch
    except ImportError:
        return None
    op = _dispatch.all_ops().get(op_name)
    if op is None or not op.has("cuda") or _dispatch.backend_runs_on("cuda", torch.device("cuda")) is not None:
        return None
    return op.implementation("cuda")


def run_cases(report: Report, op: str, shape: str, impls: dict[str, Callable], work: float, unit: str, rep_ms: int) -> None:
    from inference_pio.ops._dispatch import BackendUnsupported

    for name, fn in impls.items():
        if fn is None:
            continue
        try:
            ms = bench(fn, rep_ms)
        except BackendUnsupported as e:
            report.rows.append(Row(op, shape, name, float("nan"), work, unit, f"unsupported: {e}"))
            continue
        report.rows.append(Row(op, shape, name, ms, work, unit))
    torch.cuda.empty_cache()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> str:
    return f"max abs diff vs eager {(a.float() - b.float()).abs().max().item():.3g}"


def eager_rms_norm(x, w):
    h = x.float()
    return w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype)


def bench_norms_and_activation(report: Report, ops: set[str], tokens_list: list[int], rep_ms: int) -> None:
    from inference_pio.kernels import activation, rms_norm

    for t in tokens_list:
        x = torch.randn(t, HIDDEN, dtype=DTYPE, device="cuda")
        res = torch.randn_like(x)
        w = torch.randn(HIDDEN, dtype=DTYPE, device="cuda")
        out = torch.empty_like(x)
        size = x.numel() * x.element_size()
        if "rms_norm" in ops:
            impls = {"triton": lambda: rms_norm.rms_norm(x, w, EPS, out), "eager": lambda: eager_rms_norm(x, w)}
            if (cuda := cuda_backend("rms_norm")) is not None:
                impls["cuda"] = lambda: cuda(x, w, EPS, out)
            run_cases(report, "rms_norm", f"{t}x{HIDDEN}", impls, 2 * size, "GB/s", rep_ms)
            rms_norm.rms_norm(x, w, EPS, out)
            report.rows[-len(impls)].note = max_diff(out, eager_rms_norm(x, w))
        if "fused_add_rms_norm" in ops:

            def eager_fused():
                res.add_(x)
                x.copy_(eager_rms_norm(res, w))

            impls = {"triton": lambda: rms_norm.fused_add_rms_norm(x, res, w, EPS), "eager": eager_fused}
            if (cuda := cuda_backend("fused_add_rms_norm")) is not None:
                impls["cuda"] = lambda: cuda(x, res, w, EPS)
            run_cases(report, "fused_add_rms_norm", f"{t}x{HIDDEN}", impls, 4 * size, "GB/s", rep_ms)
        if "silu_and_mul" in ops:
            gu = torch.randn(t, 2 * INTERMEDIATE, dtype=DTYPE, device="cuda")
            act = torch.empty(t, INTERMEDIATE, dtype=DTYPE, device="cuda")
            impls = {"triton": lambda: activation.silu_and_mul(gu, act),
                     "eager": lambda: F.silu(gu[:, :INTERMEDIATE]) * gu[:, INTERMEDIATE:]}
            if (cuda := cuda_backend("silu_and_mul")) is not None:
                impls["cuda"] = lambda: cuda(gu, act)
            run_cases(report, "silu_and_mul", f"{t}x{2 * INTERMEDIATE}", impls, 1.5 * gu.numel() * 2, "GB/s", rep_ms)
            activation.silu_and_mul(gu, act)
            report.rows[-len(impls)].note = max_diff(act, F.silu(gu[:, :INTERMEDIATE].float()) * gu[:, INTERMEDIATE:].float())


def eager_rotary(positions, q, k, cache):
    """NeoX rotary as transformers-style eager code (index the cache, rotate halves, write back)."""
    half = cache.shape[1] // 2
    cos, sin = cache[positions, :half][:, None, :], cache[positions, half:][:, None, :]
    for x in (q, k):
        x1, x2 = x[..., :half].float(), x[..., half:].float()
        x.copy_(torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), -1).to(x.dtype))


def bench_rotary_and_cache(report: Report, ops: set[str], tokens_list: list[int], rep_ms: int) -> None:
    from inference_pio.kernels import kv_cache, rotary_embedding

    qkv_width = (HEADS + 2 * KV_HEADS) * HEAD_DIM
    for t in tokens_list:
        qkv = torch.randn(t, qkv_width, dtype=DTYPE, device="cuda")
        q = qkv[:, : HEADS * HEAD_DIM].view(t, HEADS, HEAD_DIM)
        k = qkv[:, HEADS * HEAD_DIM : (HEADS + KV_HEADS) * HEAD_DIM].view(t, KV_HEADS, HEAD_DIM)
        v = qkv[:, (HEADS + KV_HEADS) * HEAD_DIM :].view(t, KV_HEADS, HEAD_DIM)
        if "rotary_embedding" in ops:
            cache = torch.randn(8192, HEAD_DIM, dtype=torch.float32, device="cuda")
            pos = torch.randint(0, 8192, (t,), device="cuda")
            impls = {"triton": lambda: rotary_embedding.rotary_embedding(pos, q, k, cache, True),
                     "eager": lambda: eager_rotary(pos, q, k, cache)}
            if (cuda := cuda_backend("rotary_embedding")) is not None:
                impls["cuda"] = lambda: cuda(pos, q, k, cache, True)
            moved = 2 * t * (HEADS + KV_HEADS) * HEAD_DIM * 2 + t * HEAD_DIM * 4
            run_cases(report, "rotary_embedding", f"{t} tokens", impls, moved, "GB/s", rep_ms)
        if "reshape_and_cache" in ops:
            num_blocks = max(64, 4 * t // BLOCK_SIZE)
            kc = torch.zeros(num_blocks, BLOCK_SIZE, KV_HEADS, HEAD_DIM, dtype=DTYPE, device="cuda")
            vc = torch.zeros_like(kc)
            slots = torch.randperm(num_blocks * BLOCK_SIZE, device="cuda")[:t]

            def eager_cache():
                kc.view(-1, KV_HEADS, HEAD_DIM)[slots] = k
                vc.view(-1, KV_HEADS, HEAD_DIM)[slots] = v

            impls = {"triton": lambda: kv_cache.reshape_and_cache(k, v, kc, vc, slots), "eager": eager_cache}
            if (cuda := cuda_backend("reshape_and_cache")) is not None:
                impls["cuda"] = lambda: cuda(k, v, kc, vc, slots)
            run_cases(report, "reshape_and_cache", f"{t} tokens", impls, 4 * k.numel() * 2, "GB/s", rep_ms)


def bench_decode(report: Report, cases: list[tuple[int, int]], rep_ms: int) -> None:
    from inference_pio.kernels.paged_decode_attention import paged_decode_attention

    group = HEADS // KV_HEADS
    for batch, ctx in cases:
        blocks_per_seq = -(-ctx // BLOCK_SIZE)
        num_blocks = batch * blocks_per_seq
        kc = torch.randn(num_blocks, BLOCK_SIZE, KV_HEADS, HEAD_DIM, dtype=DTYPE, device="cuda")
        vc = torch.randn_like(kc)
        tables = torch.randperm(num_blocks, device="cuda", dtype=torch.int32).view(batch, blocks_per_seq)
        lens = torch.full((batch,), ctx, dtype=torch.int32, device="cuda")
        q = torch.randn(batch, HEADS, HEAD_DIM, dtype=DTYPE, device="cuda")
        out = torch.empty_like(q)
        scale = HEAD_DIM**-0.5
        # The eager baseline gets contiguous K/V [B, KVH, ctx, D] (gathered outside the timing).
        k_dense = kc[tables.long()].flatten(1, 2)[:, :ctx].transpose(1, 2).contiguous()
        v_dense = vc[tables.long()].flatten(1, 2)[:, :ctx].transpose(1, 2).contiguous()

        def eager():
            k_rep = k_dense.repeat_interleave(group, 1)
            v_rep = v_dense.repeat_interleave(group, 1)
            return F.scaled_dot_product_attention(q[:, :, None], k_rep, v_rep, scale=scale)[:, :, 0]

        impls = {"triton": lambda: paged_decode_attention(q, kc, vc, tables, lens, scale, None, ctx, out), "eager": eager}
        if (cuda := cuda_backend("paged_decode_attention")) is not None:
            impls["cuda"] = lambda: cuda(q, kc, vc, tables, lens, scale, None, ctx, out)
        moved = 2 * batch * ctx * KV_HEADS * HEAD_DIM * 2 + 2 * q.numel() * 2
        run_cases(report, "paged_decode_attention", f"B={batch} ctx={ctx}", impls, moved, "GB/s", rep_ms)
        paged_decode_attention(q, kc, vc, tables, lens, scale, None, ctx, out)
        report.rows[-len(impls)].note = max_diff(out, eager())
        del kc, vc, k_dense, v_dense


def bench_prefill(report: Report, cases: list[tuple[int, int]], rep_ms: int) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from inference_pio.kernels.prefill_attention import prefill_attention

    group = HEADS // KV_HEADS
    for batch, seqlen in cases:
        total = batch * seqlen
        q = torch.randn(total, HEADS, HEAD_DIM, dtype=DTYPE, device="cuda")
        k = torch.randn(total, KV_HEADS, HEAD_DIM, dtype=DTYPE, device="cuda")
        v = torch.randn_like(k)
        cu = torch.arange(0, total + 1, seqlen, dtype=torch.int32, device="cuda")
        out = torch.empty_like(q)
        scale = HEAD_DIM**-0.5
        # SDPA gets [B, H, L, D] with K/V already repeated to H heads (outside the timing).
        qb = q.view(batch, seqlen, HEADS, HEAD_DIM).transpose(1, 2)
        kb = k.view(batch, seqlen, KV_HEADS, HEAD_DIM).transpose(1, 2).repeat_interleave(group, 1)
        vb = v.view(batch, seqlen, KV_HEADS, HEAD_DIM).transpose(1, 2).repeat_interleave(group, 1)

        def sdpa_flash():
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, scale=scale)

        impls = {"triton": lambda: prefill_attention(q, k, v, cu, cu, True, scale, None, None, seqlen, seqlen, out),
                 "sdpa_flash": sdpa_flash}
        if (cuda := cuda_backend("prefill_attention")) is not None:
            impls["cuda"] = lambda: cuda(q, k, v, cu, cu, True, scale, None, None, seqlen, seqlen, out)
        flops = 4 * batch * HEADS * HEAD_DIM * seqlen * (seqlen + 1) / 2  # causal: half the score matrix
        run_cases(report, "prefill_attention", f"B={batch} L={seqlen} causal", impls, flops, "TFLOP/s", rep_ms)
        prefill_attention(q, k, v, cu, cu, True, scale, None, None, seqlen, seqlen, out)
        report.rows[-len(impls)].note = max_diff(out, sdpa_flash().transpose(1, 2).reshape_as(out))


def versions() -> dict:
    import triton

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = ""
    return {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(), "commit": commit or "unknown"}


def to_markdown(report: Report, info: dict, date: str) -> str:
    c = report.ceilings
    lines = [f"# GPU op benchmark: {info['device']}", "",
             f"Date: {date}. " + ", ".join(f"{k} {v}" for k, v in info.items() if k != "device") + ".", "",
             f"Ceilings: copy bandwidth {c['copy_gbs']:.0f} GB/s (1 GiB device copy, read + write), "
             f"bf16 matmul {c['matmul_tflops']:.0f} TFLOP/s (8192^3).", "",
             "Memory-bound ops report GB/s against the copy bandwidth; prefill reports TFLOP/s against the matmul "
             "figure. Dtype bf16, hidden 4096, 32/8 heads, head dim 128, block size 16.", ""]
    current = None
    for r in report.rows:
        if r.op != current:
            current = r.op
            lines += ["", f"## {r.op}", "", f"| shape | impl | time (us) | {r.unit} | of ceiling | vs eager | note |",
                      "| --- | --- | ---: | ---: | ---: | ---: | --- |"]
        rate = r.work / (r.ms * 1e-3) / (1e9 if r.unit == "GB/s" else 1e12)
        ceiling = c["copy_gbs"] if r.unit == "GB/s" else c["matmul_tflops"]
        base = next((b for b in report.rows if b.op == r.op and b.shape == r.shape and b.impl in ("eager", "sdpa_flash")), None)
        speedup = f"{base.ms / r.ms:.2f}x" if base and r.ms == r.ms else ""
        lines.append(f"| {r.shape} | {r.impl} | {r.ms * 1e3:.1f} | {rate:.1f} | {rate / ceiling:.0%} | {speedup} | {r.note} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_gpu_ops.py needs a CUDA device (none is visible)", file=sys.stderr)
        return 2
    all_ops = {"rms_norm", "fused_add_rms_norm", "silu_and_mul", "rotary_embedding", "reshape_and_cache",
               "paged_decode_attention", "prefill_attention"}
    ops = all_ops if args.ops == "all" else set(args.ops.split(","))
    if ops - all_ops:
        print(f"unknown ops: {', '.join(sorted(ops - all_ops))}", file=sys.stderr)
        return 2
    rep = 20 if args.quick else args.rep_ms
    tokens = [1, 512] if args.quick else [1, 16, 512, 4096]
    decode = [(1, 1024), (64, 4096)] if args.quick else [(1, 1024), (1, 32768), (8, 4096), (64, 1024), (64, 4096), (16, 32768)]
    prefill = [(1, 1024)] if args.quick else [(1, 1024), (1, 4096), (8, 1024), (1, 16384)]
    report = Report(ceilings=measure_ceilings(rep))
    print(f"ceilings: {report.ceilings}", flush=True)
    bench_norms_and_activation(report, ops, tokens, rep)
    bench_rotary_and_cache(report, ops, tokens, rep)
    if "paged_decode_attention" in ops:
        bench_decode(report, decode, rep)
    if "prefill_attention" in ops:
        bench_prefill(report, prefill, rep)
    info = versions()
    date = datetime.date.today().isoformat()
    out = args.out or Path("benchmarks/results") / f"gpu-{info['device'].replace(' ', '-')}-{date}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = to_markdown(report, info, date)
    out.write_text(text)
    print(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
