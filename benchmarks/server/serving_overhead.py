"""What the HTTP serving path costs per token as the engine gets faster, with no model in the way.

``pio serve``'s app runs over loopback HTTP in a child process on a synthetic engine: the real
``AsyncEngine`` (its stepping thread and its delivery of outputs to the event loop) around a stand-in for
``GenerationEngine`` whose step "computes" for ``--step-ms`` (sleeping, the GIL released as the kernels
release it) and then gives every running request one token. Streaming ``/v1/completions`` clients
(closed loop, ``--concurrency`` of them) read the events. Per step time, reported:

- tokens/s: what reached the clients (the engine's ceiling is running requests / step time);
- event-loop CPU per token: CPU time of the server's main thread (the event loop: HTTP, JSON, SSE
  writes, the engine's outputs) over the run, per token (Linux);
- tokens per event: how many tokens one server-sent event carried on average. While the loop keeps up
  this is ~1; when the engine outruns it, a choice's tokens leave together and the loop's CPU per token
  falls instead of growing with the engine's speed.

    python -m benchmarks.server.serving_overhead --step-ms 50 10 2 0.5 0 --out benchmarks/results/serving-overhead-cpu-DATE.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

from benchmarks.report import cpu_model_name
from benchmarks.server.load_test import free_port, wait_until_healthy
from benchmarks.server.server_vs_engine import ServerSide, write_report
from benchmarks.server.sse_client import stream_post

MODEL_NAME = "synthetic"


class SyntheticEngine:
    """Stands in for ``GenerationEngine`` under ``AsyncEngine``: ``step`` sleeps ``step_s`` and then emits one
    token to each running request (at most ``max_num_seqs``; the rest wait)."""

    def __init__(self, step_s: float, max_num_seqs: int):
        from inference_pio.engine.generate import RequestOutput

        self._output = RequestOutput
        self.step_s, self.max_num_seqs = step_s, max_num_seqs
        self.lock = threading.Lock()
        self._inbox: deque = deque()
        self._waiting: deque = deque()
        self._running: list = []

    def new_request(self, prompt, params, *, sink=None, request_id=None, index=0):
        return {"id": request_id, "left": params.max_tokens, "sink": sink}

    def submit(self, request) -> None:
        self._inbox.append(("add", request))

    def abort(self, request) -> None:
        self._inbox.append(("abort", request))

    @property
    def has_work(self) -> bool:
        return bool(self._inbox or self._waiting or self._running)

    def stats(self) -> dict:
        return {"waiting": len(self._waiting), "running": len(self._running)}

    def step(self) -> None:
        while self._inbox:
            op, r = self._inbox.popleft()
            if op == "add":
                self._waiting.append(r)
            else:
                self._running = [x for x in self._running if x is not r]
                self._waiting = deque(x for x in self._waiting if x is not r)
        while self._waiting and len(self._running) < self.max_num_seqs:
            self._running.append(self._waiting.popleft())
        if not self._running:
            return
        if self.step_s:
            time.sleep(self.step_s)
        still = []
        for r in self._running:
            r["left"] -= 1
            finished = r["left"] == 0
            r["sink"](self._output(r["id"], [7], " tok", "length" if finished else None))
            if not finished:
                still.append(r)
        self._running = still

    def fail_all(self, error: BaseException) -> None:
        for r in list(self._running) + list(self._waiting):
            r["sink"](error)
        self._running, self._waiting = [], deque()


class _Model:
    """What the completions route asks of a model when the prompt is token ids."""

    vocab_size = 1000
    max_model_len = 1 << 16

    def detokenize(self, ids, skip_special_tokens: bool = True) -> str:
        return " tok" * len(ids)

    def close(self) -> None:
        pass


def serve(port: int, step_s: float, max_num_seqs: int) -> None:
    """The child: the app over a synthetic engine."""
    import uvicorn

    from inference_pio.engine.async_engine import AsyncEngine
    from inference_pio.server import ServedModel, ServerState, create_app

    engine = AsyncEngine(SyntheticEngine(step_s, max_num_seqs))
    app = create_app(ServerState(ServedModel(MODEL_NAME, _Model(), engine)))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


async def drive(server: ServerSide, concurrency: int, requests: int, max_tokens: int) -> dict:
    pending = iter(range(requests))
    totals = {"tokens": 0, "events": 0, "errors": 0}

    async def client():
        for i in pending:
            body = {"model": MODEL_NAME, "prompt": [1, 2, 3], "max_tokens": max_tokens, "stream": True,
                    "stream_options": {"include_usage": True}, "seed": i}
            try:
                t = await stream_post(server.host, server.port, "/v1/completions", body)
            except Exception as e:  # noqa: BLE001 -- counted; the run goes on
                totals["errors"] += 1
                print(f"request {i} failed: {e}", file=sys.stderr)
                continue
            totals["tokens"] += t.completion_tokens
            totals["events"] += t.events - 1  # the usage event carries no token

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    totals["elapsed_s"] = time.perf_counter() - start
    return totals


def spawn_synthetic(step_ms: float, max_batch_size: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.server.serving_overhead", "--serve", str(port), "--step-ms", str(step_ms),
           "--max-batch-size", str(max_batch_size)]
    proc = subprocess.Popen(cmd, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(proc, url)
    return proc, url


def measure(step_ms: float, args) -> dict:
    proc, url = spawn_synthetic(step_ms, args.max_batch_size)
    try:
        server = ServerSide(url, proc.pid)
        asyncio.run(drive(server, min(4, args.concurrency), 8, 4))  # warm-up
        cpu = server.loop_cpu_s()
        totals = asyncio.run(drive(server, args.concurrency, args.requests, args.max_tokens))
        cpu_after = server.loop_cpu_s()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    tokens = totals["tokens"]
    return {"step_ms": step_ms, "tokens_per_s": tokens / totals["elapsed_s"],
            "loop_us_per_token": None if cpu is None or not tokens else 1e6 * (cpu_after - cpu) / tokens,
            "tokens_per_event": tokens / max(totals["events"], 1), "errors": totals["errors"],
            "elapsed_s": totals["elapsed_s"]}


def markdown(meta: dict, rows: list[dict], png: str | None) -> str:
    lines = [f"# Serving overhead on a synthetic engine ({meta['concurrency']} streams)", "",
             f"{meta['date']}, {meta['cpu']}, {meta['cores']} cores, load average {meta['load']} at the start; "
             f"{meta['requests']} streaming completions of {meta['max_tokens']} tokens per step time, closed loop, "
             f"max batch {meta['max_batch_size']}.", "",
             "| engine step (ms) | tokens/s | event-loop CPU per token (µs) | tokens per event |",
             "| ---: | ---: | ---: | ---: |"]
    for r in rows:
        cpu = "-" if r["loop_us_per_token"] is None else f"{r['loop_us_per_token']:.1f}"
        lines.append(f"| {r['step_ms']:g} | {r['tokens_per_s']:.0f} | {cpu} | {r['tokens_per_event']:.2f} |")
    lines += ["", f"Errors: {sum(r['errors'] for r in rows)}. Event-loop CPU: the server's main thread over the run, "
                  "per delivered token."]
    if png:
        lines += ["", f"![chart]({png})"]
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate = [r["tokens_per_s"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot(rate, [r["loop_us_per_token"] or 0 for r in rows], "o-", color="#3a7")
    left.set_xscale("log")
    left.set_xlabel("tokens/s (log)")
    left.set_ylabel("µs")
    left.set_title("event-loop CPU per token")
    right.plot(rate, [r["tokens_per_event"] for r in rows], "o-", color="#37a")
    right.set_xscale("log")
    right.set_xlabel("tokens/s (log)")
    right.set_title("tokens per server-sent event")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-ms", type=float, nargs="+", default=[50, 10, 2, 0.5, 0],
                        help="the synthetic engine's step times (0: as fast as its thread can go)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, help="write OUT.md, OUT.json and OUT.png")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)  # the child
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.step_ms[0] / 1e3, args.max_batch_size)
        return 0
    load = os.getloadavg()[0]
    rows = []
    for step_ms in args.step_ms:
        rows.append(measure(step_ms, args))
        print(json.dumps(rows[-1]), flush=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model_name(),
            "cores": os.cpu_count(), "load": f"{load:.1f}", "concurrency": args.concurrency,
            "requests": args.requests, "max_tokens": args.max_tokens, "max_batch_size": args.max_batch_size}
    write_report(args.out, lambda png: markdown(meta, rows, png), {"meta": meta, "rows": rows},
                 lambda path: chart(rows, path, f"pio serve on a synthetic engine, {args.concurrency} streams"))
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
