"""What tensor parallelism costs on CPU: decode steps with TP=1 vs TP=2 (gloo, loopback), and one all-reduce.

A random-weight Llama (``--hidden``, ``--layers``; 8 heads over 4 KV heads), float32 safetensors or a
quantized GGUF (``--format Q8_0`` / ``Q4_0``; each rank then reads its blocks of the file), decodes
``--tokens`` greedy tokens for ``--batch`` sequences: in one process with ``--threads`` threads (the
fused C++ decode step, then the per-op path it has under TP), and as two ranks of ``--threads // 2``
threads each (the same cores split), loaded through the plugin as ``pio serve --tensor-parallel-size 2``
loads them. Each TP step adds two all-reduces per layer (after o and down), one for the embedding and
one all-gather of the logits; the gloo all-reduce of one step's ``[batch, hidden]`` rows is timed on
its own too. Reported as ms per step (median of ``--rounds`` interleaved rounds).

    python benchmarks/distributed/tensor_parallel.py --threads 2 --out benchmarks/results/tensor-parallel-cpu-DATE
    python benchmarks/distributed/tensor_parallel.py --hidden 256 --layers 2 --tokens 4 --rounds 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.report import cpu_model_name  # noqa: E402

FORMATS = ("safetensors", "Q8_0", "Q4_0")
VOCAB = 32000


def intermediate_size(hidden: int) -> int:
    # ~8/3 hidden, a multiple of 512: each of 2 ranks then holds whole 256-element blocks of ffn_down.
    return max(512, hidden * 8 // 3 // 512 * 512)


def write_model(folder: Path, fmt: str, hidden: int, layers: int) -> Path:
    """The random model in ``fmt``; returns the path ``inference_pio.load`` takes."""
    if fmt == "safetensors":
        import transformers

        cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=intermediate_size(hidden),
                                       num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=4,
                                       max_position_embeddings=1024)
        torch.manual_seed(0)
        transformers.LlamaForCausalLM(cfg).save_pretrained(folder)
        return folder
    from benchmarks.gguf.random_gguf import LlamaShape, write_random_gguf

    shape = LlamaShape(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=intermediate_size(hidden),
                       num_layers=layers, num_heads=8, num_kv_heads=4, context_length=1024)
    return write_random_gguf(folder / f"random-{fmt}.gguf", fmt, shape)


def decode_ms(model, cache, batch: int, tokens: int) -> float:
    """Median milliseconds of ``tokens`` decode steps of ``batch`` greedy sequences (after their prefill step)."""
    from inference_pio.engine import SamplingParams
    from inference_pio.engine.generate import GenerationEngine

    engine = GenerationEngine(model, cache, max_model_len=1024, max_num_seqs=batch, enable_prefix_caching=False)
    prompts = [[1 + i, 2, 3, 4] for i in range(batch)]
    engine.generate(prompts, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))  # warm up
    for prompt in prompts:
        engine.submit(engine.new_request(prompt, SamplingParams(temperature=0, max_tokens=tokens + 2, ignore_eos=True)))
    engine.step()  # the prompts' prefill (and each first token)
    steps = []
    for _ in range(tokens):
        start = time.perf_counter()
        engine.step()
        steps.append(time.perf_counter() - start)
    while engine.has_work:
        engine.step()
    return statistics.median(steps) * 1e3


def load(path: str, batch: int, **options):
    import inference_pio

    return inference_pio.load(path, dtype="float32", max_seq_len=1024, max_batch_size=batch,
                              enable_prefix_caching=False, **options).plugin


def rank_main(rank: int, world: int, port: int, path: str, args, out: str) -> None:
    import torch.distributed as dist

    from inference_pio.distributed.tensor_parallel import init_tensor_parallel, shutdown_tensor_parallel
    from inference_pio.distributed.tp_steps import follow

    torch.set_num_threads(max(1, args.threads // world))
    init_tensor_parallel(rank, world, f"tcp://127.0.0.1:{port}", "gloo", timeout_s=300)
    try:
        plugin = load(path, args.batch, tensor_parallel_size=world)
        rows = torch.ones(args.batch, plugin.config.hidden_size)
        for _ in range(10):
            dist.all_reduce(rows)
        start = time.perf_counter()
        for _ in range(200):
            dist.all_reduce(rows)
        allreduce_ms = (time.perf_counter() - start) / 200 * 1e3
        if rank == 0:
            leader = plugin.engine.model  # the plugin's LeaderModel: each step goes to the followers first
            ms = decode_ms(leader, plugin.kv_cache, args.batch, args.tokens)
            leader.stop()
            Path(out).write_text(json.dumps({"step_ms": ms, "allreduce_ms": allreduce_ms}))
        else:
            follow(plugin.model, plugin.kv_cache)
    finally:
        shutdown_tensor_parallel()


def single_process(path: Path, args, fused: bool) -> float:
    from inference_pio.layers.fused_decode import FUSED_DECODE_ENV

    torch.set_num_threads(args.threads)
    before = os.environ.get(FUSED_DECODE_ENV)
    os.environ[FUSED_DECODE_ENV] = "1" if fused else "0"
    try:
        plugin = load(str(path), args.batch)
        return decode_ms(plugin.model, plugin.kv_cache, args.batch, args.tokens)
    finally:
        os.environ.pop(FUSED_DECODE_ENV) if before is None else os.environ.update({FUSED_DECODE_ENV: before})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(args) -> dict:
    runs = {"tp1_fused": [], "tp1_per_op": [], "tp2": [], "allreduce": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_model(Path(tmp), args.format, args.hidden, args.layers)
        for _ in range(args.rounds):  # interleaved, so a loaded machine slows all alike
            runs["tp1_fused"].append(single_process(path, args, fused=True))
            runs["tp1_per_op"].append(single_process(path, args, fused=False))
            out = Path(tmp) / "tp2.json"
            mp.start_processes(rank_main, args=(2, free_port(), str(path), args, str(out)), nprocs=2,
                               start_method="spawn")
            result = json.loads(out.read_text())
            runs["tp2"].append(result["step_ms"])
            runs["allreduce"].append(result["allreduce_ms"])
    return {key: round(statistics.median(values), 3) for key, values in runs.items()} | {"runs": runs}


def report(meta: dict, r: dict, png: str) -> str:
    a = meta["args"]
    collectives = 2 * a["layers"] + 2
    return "\n".join([
        f"# Tensor parallelism on CPU: {a['format']}, hidden {a['hidden']}, {a['layers']} layers", "",
        f"{meta['date']}, {meta['cpu']}, {a['threads']} threads in all, load average {meta['load']} at the start; "
        f"batch {a['batch']}, {a['tokens']} decode steps, median of {a['rounds']} interleaved rounds.", "",
        "| | ms per decode step |", "| --- | ---: |",
        f"| TP=1, 1 process x {a['threads']} threads, fused C++ step | {r['tp1_fused']:.2f} |",
        f"| TP=1, 1 process x {a['threads']} threads, per-op path (as under TP) | {r['tp1_per_op']:.2f} |",
        f"| TP=2, 2 ranks x {max(1, a['threads'] // 2)} threads, gloo over loopback | {r['tp2']:.2f} |",
        f"| one gloo all-reduce of [{a['batch']}, {a['hidden']}] float32 | {r['allreduce']:.3f} |", "",
        f"TP=2 / TP=1 (fused): {r['tp2'] / r['tp1_fused']:.2f}x the step time; {collectives} collectives per step "
        f"(~{(collectives - 1) * r['allreduce']:.2f} ms of all-reduce alone).", "",
        f"![chart]({png})", ""])


def chart(r: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    labels = ["TP=1 fused", "TP=1 per-op", "TP=2 (gloo)"]
    ax.bar(labels, [r["tp1_fused"], r["tp1_per_op"], r["tp2"]], color=["#3a7", "#7b9", "#c63"])
    ax.set_ylabel("ms per decode step")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", choices=FORMATS, default="safetensors")
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, help="write OUT.md, OUT.json and OUT.png")
    args = p.parse_args(argv)
    if args.hidden % 256:
        p.error("--hidden must be a multiple of 256 (8 heads whose per-rank width is whole blocks)")
    load_avg = os.getloadavg()[0]
    result = measure(args)
    meta = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model_name(),
            "load": f"{load_avg:.1f}", "args": vars(args) | {"out": str(args.out)}}
    png = args.out.with_suffix(".png").name if args.out else "(no chart: run with --out)"
    text = report(meta, result, png)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "result": result}, indent=1))
        chart(result, args.out.with_suffix(".png"), f"{args.format}, hidden {args.hidden}, {args.layers} layers, "
                                                     f"batch {args.batch}, {args.threads} threads")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
