"""Load test of a running ``pio serve``: N requests, C concurrent, over loopback.

Reports throughput (requests/s, completion tokens/s), latency percentiles (whole request and time
to first token, streaming) and errors, as markdown (and JSON with --json). Target: 0 errors.

    pio serve --port 8000 &                               # the default model, or any MODEL
    python benchmarks/server/load_test.py --url http://127.0.0.1:8000 --requests 1000 --concurrency 32

With ``--spawn MODEL`` the script starts the server itself on a free port and stops it after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class Results:
    latencies: list[float] = field(default_factory=list)
    first_token: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


async def one_request(http: httpx.AsyncClient, args, i: int, results: Results) -> None:
    body = {"model": args.model, "messages": [{"role": "user", "content": f"Tell me fact number {i} about cats."}],
            "max_tokens": args.max_tokens, "temperature": 0.7, "seed": i, "stream": True,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = None
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                await r.aread()
                results.error(f"HTTP {r.status_code}")
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                    first = time.perf_counter() - start
                if chunk.get("usage"):
                    results.completion_tokens += chunk["usage"]["completion_tokens"]
    except httpx.HTTPError as e:
        results.error(type(e).__name__)
        return
    results.latencies.append(time.perf_counter() - start)
    if first is not None:
        results.first_token.append(first)


async def run(args) -> tuple[Results, float]:
    results = Results()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=600, limits=limits) as http:
        if not args.model:
            args.model = (await http.get("/v1/models")).json()["data"][0]["id"]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(args.requests):
            queue.put_nowait(i)

        async def worker():
            while not queue.empty():
                await one_request(http, args, queue.get_nowait(), results)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        return results, time.perf_counter() - start


def report(args, results: Results, elapsed: float) -> dict:
    ok = len(results.latencies)
    return {
        "requests": args.requests, "concurrency": args.concurrency, "max_tokens": args.max_tokens, "ok": ok,
        "errors": sum(results.errors.values()), "error_kinds": results.errors, "elapsed_s": round(elapsed, 2),
        "requests_per_s": round(ok / elapsed, 2), "completion_tokens_per_s": round(results.completion_tokens / elapsed, 1),
        "latency_s": {f"p{q}": round(percentile(results.latencies, q), 3) for q in (50, 90, 99)},
        "time_to_first_token_s": {f"p{q}": round(percentile(results.first_token, q), 3) for q in (50, 90, 99)},
        "mean_latency_s": round(statistics.fmean(results.latencies), 3) if ok else None,
    }


def markdown(r: dict) -> str:
    lat, ttft = r["latency_s"], r["time_to_first_token_s"]
    return "\n".join([
        f"{r['requests']} chat requests, {r['concurrency']} concurrent, up to {r['max_tokens']} tokens each",
        "",
        "| ok | errors | req/s | completion tok/s | latency p50 / p90 / p99 (s) | first token p50 / p90 / p99 (s) |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {r['ok']} | {r['errors']} | {r['requests_per_s']} | {r['completion_tokens_per_s']} | "
        f"{lat['p50']} / {lat['p90']} / {lat['p99']} | {ttft['p50']} / {ttft['p90']} / {ttft['p99']} |",
    ])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(proc: subprocess.Popen, url: str) -> None:
    """Polls ``url``/health until it answers 200; kills ``proc`` and exits if it never does."""
    for _ in range(600):
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
    proc.kill()
    raise SystemExit("server did not start")


def spawn(model: str, *extra: str) -> tuple[subprocess.Popen, str]:
    """``pio serve MODEL EXTRA...`` on a free loopback port; returns the process and its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "inference_pio", "serve", *([model] if model != "default" else []),
           "--port", str(port), "--log-level", "warning", *extra]
    proc = subprocess.Popen(cmd, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(proc, url)
    return proc, url


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--spawn", metavar="MODEL", help="start `pio serve MODEL` (or 'default') for the run")
    p.add_argument("--model", help="model name (default: the server's first)")
    p.add_argument("--api-key", default=os.environ.get("PIO_API_KEY"))
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--out", help="write the markdown report to this file")
    args = p.parse_args()
    proc = None
    if args.spawn:
        proc, args.url = spawn(args.spawn)
    try:
        results, elapsed = asyncio.run(run(args))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    r = report(args, results, elapsed)
    text = markdown(r)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)
    if r["errors"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
