"""What tensor parallelism costs on CPU: decode steps with TP=1 vs TP=2 (gloo, loopback), and one all-reduce.

A random-weight Llama (``--hidden``, ``--layers``; 8 heads over 4 KV heads) decodes ``--tokens`` greedy
tokens for ``--batch`` sequences, once in one process with ``--threads`` threads and once as two
ranks of ``--threads // 2`` threads each (the same cores split). Each TP step adds two all-reduces
per layer (after o and down), one for the embedding and one all-gather of the logits; the gloo
all-reduce of one step's ``[batch, hidden]`` rows is timed on its own too. Reported as ms per step.

    python benchmarks/distributed/tensor_parallel.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def write_model(folder: Path, hidden: int, layers: int) -> None:
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=hidden * 8 // 3 // 64 * 64,
                                   num_hidden_layers=layers, num_attention_heads=8, num_key_value_heads=4,
                                   max_position_embeddings=1024)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(folder)


def decode_ms(model, cache, batch: int, tokens: int) -> float:
    """Milliseconds per decode step of ``batch`` greedy sequences (the prefill is left out)."""
    from inference_pio.engine import SamplingParams
    from inference_pio.engine.generate import GenerationEngine

    engine = GenerationEngine(model, cache, max_model_len=1024, max_num_seqs=batch)
    prompts = [[1 + i, 2, 3, 4] for i in range(batch)]
    engine.generate(prompts, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))  # warm up
    short = time.perf_counter()
    engine.generate(prompts, SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))
    short = time.perf_counter() - short
    start = time.perf_counter()
    engine.generate(prompts, SamplingParams(temperature=0, max_tokens=tokens + 2, ignore_eos=True))
    return (time.perf_counter() - start - short) / tokens * 1e3


def rank_main(rank: int, world: int, port: int, folder: str, args, out: str) -> None:
    import torch.distributed as dist

    from inference_pio.distributed.tensor_parallel import init_tensor_parallel, shard_config, tensor_parallel_model
    from inference_pio.distributed.tp_steps import LeaderModel, follow
    from inference_pio.engine import PagedKVCache
    from inference_pio.plugins.llama.config import LlamaConfig
    from inference_pio.plugins.llama.model import LlamaModel

    torch.set_num_threads(max(1, args.threads // world))
    init_tensor_parallel(rank, world, f"tcp://127.0.0.1:{port}", "gloo", timeout_s=300)
    cfg = LlamaConfig.from_checkpoint(folder, dtype="float32", max_seq_len=1024)
    model = tensor_parallel_model(LlamaModel, cfg, rank, world)
    cache = PagedKVCache(cfg.num_hidden_layers, shard_config(cfg, world).num_key_value_heads, cfg.head_dim,
                         args.batch * 8, 16, torch.float32)
    rows = torch.ones(args.batch, cfg.hidden_size)
    for _ in range(10):
        dist.all_reduce(rows)
    start = time.perf_counter()
    for _ in range(200):
        dist.all_reduce(rows)
    allreduce_ms = (time.perf_counter() - start) / 200 * 1e3
    if rank == 0:
        leader = LeaderModel(model)
        ms = decode_ms(leader, cache, args.batch, args.tokens)
        leader.stop()
        Path(out).write_text(json.dumps({"step_ms": ms, "allreduce_ms": allreduce_ms}))
    else:
        follow(model, cache)


def single_process(folder: Path, args) -> float:
    import inference_pio

    torch.set_num_threads(args.threads)
    model = inference_pio.load(folder, dtype="float32", max_seq_len=1024, max_batch_size=args.batch)
    plugin = model.plugin
    return decode_ms(plugin.model, plugin.kv_cache, args.batch, args.tokens)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        write_model(folder, args.hidden, args.layers)
        tp1, tp2, reduce = [], [], []
        for _ in range(args.rounds):  # interleaved, so a loaded machine slows both alike
            tp1.append(single_process(folder, args))
            out = Path(tmp) / "tp2.json"
            mp.start_processes(rank_main, args=(2, free_port(), str(folder), args, str(out)), nprocs=2,
                               start_method="spawn")
            tp2_result = json.loads(out.read_text())
            tp2.append(tp2_result["step_ms"])
            reduce.append(tp2_result["allreduce_ms"])
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(f"hidden {args.hidden}, {args.layers} layers, batch {args.batch}, {args.tokens} decode steps, "
          f"{args.threads} threads in all, float32, {args.rounds} rounds interleaved")
    print("| | ms per decode step |\n| --- | --- |")
    print(f"| TP=1 (1 process, {args.threads} threads) | {med(tp1):.2f} |")
    print(f"| TP=2 (2 ranks x {max(1, args.threads // 2)} thread, gloo) | {med(tp2):.2f} |")
    print(f"| one gloo all-reduce of [{args.batch}, {args.hidden}] float32 | {med(reduce):.3f} |")
    print(f"\nTP=2 / TP=1 step time: x{med(tp2) / med(tp1):.2f}; collectives per step: "
          f"{2 * args.layers + 2} (~{(2 * args.layers + 1) * med(reduce):.2f} ms of all-reduce)")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
