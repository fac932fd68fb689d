"""Ray Serve replicas on loopback: throughput of 1 vs 2 replicas, and prefix routing vs round-robin.

1. Throughput: the same load (``--requests`` chat requests, ``--concurrency`` at a time, the load of
   ``benchmarks/server/load_test.py``) against 1 and then 2 replicas of one thread each, alternating
   for ``--rounds`` rounds in one run; reported as a ratio (the figures of a loaded machine mean little).
2. Routing: ``--conversations`` multi-turn chats (each turn resends the history plus the answer),
   run concurrently against 2 replicas under prefix routing and under round-robin. A turn is a
   prefix hit when it lands on the replica that served the conversation's previous turn (the one
   whose KV cache holds its history); the ``x-pio-replica`` header says where it landed.

    python benchmarks/distributed/replicas.py                      # the default model
    python benchmarks/distributed/replicas.py --model CHECKPOINT --requests 64 --conversations 8 --turns 4

Needs the distributed extra (``pip install ".[distributed]"``) and ``--replicas + 1`` free cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.server.load_test import run as load  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy(spec, replicas: int, policy: str) -> None:
    from ray import serve

    from inference_pio.distributed.ray_serve import build_app

    serve.run(build_app(spec, replicas, policy=policy, cpus_per_replica=1), name="bench", route_prefix="/")


async def conversation(http: httpx.AsyncClient, model: str, c: int, turns: int, max_tokens: int) -> list[int]:
    messages = [{"role": "system", "content": f"You are assistant number {c}. Answer every question briefly."}]
    replicas = []
    for t in range(turns):
        messages.append({"role": "user", "content": f"Question {t} of conversation {c}: tell me about topic {t}."})
        r = await http.post("/v1/chat/completions", json={"model": model, "messages": messages,
                                                          "max_tokens": max_tokens, "temperature": 0})
        if r.status_code != 200:
            raise SystemExit(f"conversation {c}, turn {t}: HTTP {r.status_code} {r.text}")
        replicas.append(int(r.headers["x-pio-replica"]))
        messages.append({"role": "assistant", "content": r.json()["choices"][0]["message"]["content"]})
    return replicas


async def multi_turn(url: str, model: str, conversations: int, turns: int, max_tokens: int) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        start = time.perf_counter()
        routes = await asyncio.gather(*(conversation(http, model, c, turns, max_tokens)
                                        for c in range(conversations)))
        elapsed = time.perf_counter() - start
    later_turns = [(r[t - 1], r[t]) for r in routes for t in range(1, len(r))]
    hits = sum(previous == now for previous, now in later_turns)
    return {"prefix_hit_rate": round(hits / max(1, len(later_turns)), 3), "elapsed_s": round(elapsed, 2),
            "replicas_used": sorted({x for r in routes for x in r})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint folder or .gguf (default: the default model)")
    p.add_argument("--requests", type=int, default=128)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-seq-len", type=int, default=None, help="context of the replicas (default: the model's)")
    p.add_argument("--conversations", type=int, default=16)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args()

    import ray
    from ray import serve

    from inference_pio.distributed.spec import ReplicaSpec

    if args.model is None:
        from inference_pio.defaults import default_model_path

        args.model = str(default_model_path())
    options = {"max_batch_size": args.concurrency}
    if args.max_seq_len:
        options["max_seq_len"] = args.max_seq_len
    spec = ReplicaSpec(args.model, "bench", options)
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    load_args = argparse.Namespace(url=url, model="bench", api_key=None, requests=args.requests,
                                   concurrency=args.concurrency, max_tokens=args.max_tokens)
    out: dict = {"throughput": {1: [], 2: []}, "routing": {}}
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"enable_access_log": False})
        for _ in range(args.rounds):
            for replicas in (1, 2):
                deploy(spec, replicas, "prefix")
                results, elapsed = asyncio.run(load(load_args))
                if results.errors:
                    raise SystemExit(f"{replicas} replicas: errors {results.errors}")
                out["throughput"][replicas].append(round(results.completion_tokens / elapsed, 1))
        for policy in ("prefix", "round_robin"):
            deploy(spec, 2, policy)
            out["routing"][policy] = asyncio.run(multi_turn(url, "bench", args.conversations, args.turns,
                                                            args.max_tokens))
    finally:
        serve.shutdown()
        ray.shutdown()
    one, two = (statistics.median(out["throughput"][n]) for n in (1, 2))
    out["two_vs_one"] = round(two / one, 2)
    print(f"{args.requests} chat requests, {args.concurrency} concurrent, {args.max_tokens} tokens each, "
          f"{args.rounds} rounds alternating")
    print("| replicas | completion tok/s per round | median |\n| --- | --- | --- |")
    for n in (1, 2):
        print(f"| {n} | {' / '.join(map(str, out['throughput'][n]))} | {statistics.median(out['throughput'][n])} |")
    print(f"\n2 replicas / 1 replica: x{out['two_vs_one']}\n")
    print(f"{args.conversations} conversations x {args.turns} turns, concurrent, 2 replicas")
    print("| routing | prefix-hit rate (turns 2+) | elapsed (s) |\n| --- | --- | --- |")
    for policy, r in out["routing"].items():
        print(f"| {policy} | {r['prefix_hit_rate']} | {r['elapsed_s']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
