"""Ray Serve replicas on loopback: throughput of 1 vs 2 replicas, and prefix routing vs round-robin.

1. Throughput: the same load (``--requests`` chat requests, ``--concurrency`` at a time, the load of
   ``benchmarks/server/load_test.py``) against 1 and then 2 replicas of one thread each, alternating
   for ``--rounds`` rounds in one run; reported as a ratio (the figures of a loaded machine mean little).
2. Routing: ``--conversations`` multi-turn chats (each turn resends the history plus the answer),
   run concurrently against 2 replicas under prefix routing and under round-robin, each user pausing
   a seeded random 0 to ``--think-ms`` before a turn. A turn is a prefix hit when it lands on the
   replica that served the conversation's previous turn (the one whose KV cache holds its history);
   the ``x-pio-replica`` header says where it landed.

    python benchmarks/distributed/replicas.py --out benchmarks/results/replicas-cpu-DATE   # the default model
    python benchmarks/distributed/replicas.py --model CHECKPOINT --requests 64 --conversations 8 --turns 4
    python benchmarks/distributed/replicas.py --requests 8 --concurrency 4 --max-tokens 4 --rounds 1 \
        --conversations 2 --turns 2 --max-seq-len 512                                # smoke run

``--out OUT`` writes OUT.md, OUT.json and OUT.png.

Needs the distributed extra (``pip install ".[distributed]"``) and 3 free cores (2 replicas and the ingress).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.report import cpu_model_name  # noqa: E402
from benchmarks.server.load_test import run as load  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deploy(spec, replicas: int, policy: str) -> None:
    from ray import serve

    from inference_pio.distributed.ray_serve import build_app

    serve.run(build_app(spec, replicas, policy=policy, cpus_per_replica=1), name="bench", route_prefix="/")


async def conversation(http: httpx.AsyncClient, model: str, c: int, turns: int, max_tokens: int,
                       think_s: float) -> list[int]:
    messages = [{"role": "system", "content": f"You are assistant number {c}. Answer every question briefly."}]
    replicas = []
    pause = random.Random(c)  # seeded: both policies see the same arrival pattern
    for t in range(turns):
        # A user's pause before each turn mixes the arrival order, as real traffic does; in lockstep,
        # round-robin would send every conversation back to the same replica by accident.
        await asyncio.sleep(pause.uniform(0, think_s))
        messages.append({"role": "user", "content": f"Question {t} of conversation {c}: tell me about topic {t}."})
        r = await http.post("/v1/chat/completions", json={"model": model, "messages": messages,
                                                          "max_tokens": max_tokens, "temperature": 0})
        if r.status_code != 200:
            raise SystemExit(f"conversation {c}, turn {t}: HTTP {r.status_code} {r.text}")
        replicas.append(int(r.headers["x-pio-replica"]))
        messages.append({"role": "assistant", "content": r.json()["choices"][0]["message"]["content"]})
    return replicas


async def multi_turn(url: str, model: str, conversations: int, turns: int, max_tokens: int, think_s: float) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        start = time.perf_counter()
        routes = await asyncio.gather(*(conversation(http, model, c, turns, max_tokens, think_s)
                                        for c in range(conversations)))
        elapsed = time.perf_counter() - start
    later_turns = [(r[t - 1], r[t]) for r in routes for t in range(1, len(r))]
    hits = sum(previous == now for previous, now in later_turns)
    return {"prefix_hit_rate": round(hits / max(1, len(later_turns)), 3), "elapsed_s": round(elapsed, 2),
            "replicas_used": sorted({x for r in routes for x in r})}


def measure(args, spec) -> dict:
    import ray
    from ray import serve

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
                                                            args.max_tokens, args.think_ms / 1e3))
    finally:
        serve.shutdown()
        ray.shutdown()
    one, two = (statistics.median(out["throughput"][n]) for n in (1, 2))
    out["median_tokens_per_s"] = {1: one, 2: two}
    out["two_vs_one"] = round(two / one, 2)
    return out


def report(meta: dict, out: dict, png: str) -> str:
    a = meta["args"]
    lines = [f"# Ray Serve replicas on loopback: {meta['model']}", "",
             f"{meta['date']}, {meta['cpu']}, {meta['cores']} cores, load average {meta['load']} at the start; "
             "each replica one thread (one CPU).", "",
             f"## Throughput: {a['requests']} chat requests, {a['concurrency']} concurrent, {a['max_tokens']} tokens "
             f"each, {a['rounds']} rounds alternating", "",
             "| replicas | completion tok/s per round | median |", "| ---: | --- | ---: |"]
    for n in (1, 2):
        lines.append(f"| {n} | {' / '.join(map(str, out['throughput'][n]))} | {out['median_tokens_per_s'][n]} |")
    lines += ["", f"2 replicas / 1 replica: {out['two_vs_one']}x", "",
              f"## Routing: {a['conversations']} conversations x {a['turns']} turns, concurrent, 2 replicas", "",
              "A turn is a prefix hit when it lands on the replica that served its conversation's previous turn; "
              f"users pause 0-{a['think_ms']:g} ms (seeded) before each turn. Round-robin's expected rate is "
              "about 1 / replicas.", "",
              "| routing | prefix-hit rate (turns 2+) | elapsed (s) |", "| --- | ---: | ---: |"]
    for policy, r in out["routing"].items():
        lines.append(f"| {policy} | {r['prefix_hit_rate']} | {r['elapsed_s']} |")
    lines += ["", f"![chart]({png})", ""]
    return "\n".join(lines)


def chart(out: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.2))
    left.bar(["1 replica", "2 replicas"], [out["median_tokens_per_s"][1], out["median_tokens_per_s"][2]],
             color=["#999", "#3a7"])
    left.set_ylabel("completion tokens/s")
    left.set_title("throughput")
    policies = list(out["routing"])
    right.bar(policies, [out["routing"][p]["prefix_hit_rate"] for p in policies], color=["#3a7", "#999"])
    right.set_ylim(0, 1)
    right.set_title("prefix-hit rate, multi-turn")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint folder or .gguf (default: the default model)")
    p.add_argument("--requests", type=int, default=128)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--max-seq-len", type=int, default=None, help="context of the replicas (default: the model's)")
    p.add_argument("--conversations", type=int, default=16)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--think-ms", type=float, default=500, help="a user's pause before each turn: 0 to this, seeded")
    p.add_argument("--out", type=Path, help="write OUT.md, OUT.json and OUT.png")
    args = p.parse_args(argv)

    from inference_pio.distributed.spec import ReplicaSpec

    if args.model is None:
        from inference_pio.defaults import default_model_path

        args.model = str(default_model_path())
    options = {"max_batch_size": args.concurrency}
    if args.max_seq_len:
        options["max_seq_len"] = args.max_seq_len
    load_avg = os.getloadavg()[0]
    out = measure(args, ReplicaSpec(args.model, "bench", options))
    meta = {"model": Path(args.model).name, "date": time.strftime("%Y-%m-%d"),
            "cpu": cpu_model_name(), "cores": os.cpu_count(), "load": f"{load_avg:.1f}",
            "args": vars(args) | {"out": str(args.out)}}
    png = args.out.with_suffix(".png").name if args.out else "(no chart: run with --out)"
    text = report(meta, out, png)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "result": out}, indent=1))
        chart(out, args.out.with_suffix(".png"), f"{meta['model']}, {args.concurrency} concurrent, "
                                                 f"{args.max_tokens} tokens per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
