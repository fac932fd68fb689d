"""The server against the engine on the same request stream: what the HTTP serving path costs.

One request stream (distinct chat prompts of 4 lengths, ``--max-tokens`` tokens each with EOS ignored,
temperature 0.7 with a seed per request) runs at each concurrency of ``--concurrency`` (8, 32, 128) two ways:

- engine: the model's ``AsyncEngine`` in this process (the one ``pio serve`` runs), driven by coroutines;
- server: a real ``pio serve`` process over loopback HTTP, streaming ``/v1/chat/completions``.

Arrivals are a closed loop in both: C clients, each sending its next request when its previous one ends.
Both sides load the same model with the same options, prefix caching off (and every prompt distinct), so
both do identical work; the sampling parameters are the server's own (built from the same request body)
and every run checks that both sides counted the same prompt and completion tokens. Reported per side and
concurrency: completion tokens/s over the run's wall time, time to first token (the first output carrying
text) p50/p95, and the server's tokens/s as a fraction of the engine's. The two sides alternate per
concurrency (and per ``--repeats``), so a machine whose load drifts hurts both alike.

The client reads raw sockets (:mod:`benchmarks.server.sse_client`): on a small machine it shares the
cores with the server, and a heavier client would be charged to the server.

    python -m benchmarks.server.server_vs_engine --out benchmarks/results/server-vs-engine-cpu-DATE.md
    python -m benchmarks.server.server_vs_engine --requests 16 --max-tokens 4 --concurrency 2 8   # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks.report import cpu_model_name
from benchmarks.server.load_test import percentile, spawn
from benchmarks.server.sse_client import stream_post

MODEL_NAME = "bench"
TEMPERATURE = 0.7
TOPICS = ["cats", "rivers", "volcanoes", "bread", "chess", "comets", "bridges", "bees"]
FILLER = ("Answer in plain words, as a teacher would to a curious student, and keep to what is well known. ")


@dataclass(frozen=True)
class StreamRequest:
    """One request of the stream: distinct text (its index), one of four prompt lengths."""

    index: int
    max_tokens: int

    @property
    def messages(self) -> list[dict]:
        i = self.index
        question = f"Request {i}: tell me fact number {i} about {TOPICS[i % len(TOPICS)]}."
        return [{"role": "user", "content": FILLER * (i % 4 * 2) + question}]

    def body(self, stream: bool = True) -> dict:
        return {"model": MODEL_NAME, "messages": self.messages, "max_tokens": self.max_tokens,
                "temperature": TEMPERATURE, "seed": self.index, "ignore_eos": True, "stream": stream,
                "stream_options": {"include_usage": True} if stream else None}


@dataclass
class Run:
    """One side at one concurrency."""

    side: str
    concurrency: int
    elapsed_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_text_s: list[float] = field(default_factory=list)
    errors: int = 0
    loop_cpu_s: float | None = None  # CPU time of the thread running the side's event loop

    @property
    def loop_us_per_token(self) -> float | None:
        if self.loop_cpu_s is None or not self.completion_tokens:
            return None
        return 1e6 * self.loop_cpu_s / self.completion_tokens

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.elapsed_s if self.elapsed_s else 0.0


async def closed_loop(requests: list[StreamRequest], concurrency: int, one, run: Run, advance) -> None:
    """``concurrency`` clients take the next request of ``requests`` as their previous one ends."""
    pending = iter(requests)

    async def client():
        for req in pending:
            try:
                prompt, completion, first = await one(req)
            except Exception as e:  # noqa: BLE001 -- counted and shown; the run goes on
                run.errors += 1
                print(f"request {req.index} failed: {type(e).__name__}: {e}", file=sys.stderr)
            else:
                run.prompt_tokens += prompt
                run.completion_tokens += completion
                if first is not None:
                    run.first_text_s.append(first)
            advance(run)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    run.elapsed_s = time.perf_counter() - start


class EngineSide:
    """The model's async engine in this process, fed the prompts the server's chat template makes."""

    def __init__(self, model):
        from inference_pio.server.generation import sampling_for_choices
        from inference_pio.server.schemas import ChatCompletionRequest

        self.model, self.engine = model, model.async_engine()
        self._params = lambda req: sampling_for_choices(ChatCompletionRequest(**req.body()), req.max_tokens)[0]
        self._prompts: dict[int, list[int]] = {}

    def loop_cpu_s(self) -> float:
        """This thread's CPU time: the event loop the engine's coroutines run on."""
        return time.thread_time()

    def prepare(self, requests: list[StreamRequest]) -> None:
        for req in requests:
            if req.index not in self._prompts:
                self._prompts[req.index] = self.model.apply_chat_template(req.messages)

    def prompt_tokens(self, requests: list[StreamRequest]) -> int:
        return sum(len(self._prompts[r.index]) for r in requests)

    async def __call__(self, req: StreamRequest) -> tuple[int, int, float | None]:
        prompt, params = self._prompts[req.index], self._params(req)
        start, first, tokens = time.perf_counter(), None, 0
        async for out in self.engine.generate(prompt, params):
            tokens += len(out.token_ids)
            if first is None and out.text:
                first = time.perf_counter() - start
        return len(prompt), tokens, first


class ServerSide:
    """A ``pio serve`` process; each request is one streaming chat completion over loopback."""

    def __init__(self, url: str, pid: int):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self._stat = Path(f"/proc/{pid}/task/{pid}/stat")  # the server's main thread runs its event loop

    def loop_cpu_s(self) -> float | None:
        """CPU time of the server's event-loop thread (Linux; None elsewhere)."""
        try:
            fields = self._stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def prepare(self, requests: list[StreamRequest]) -> None:
        pass

    async def __call__(self, req: StreamRequest) -> tuple[int, int, float | None]:
        timing = await stream_post(self.host, self.port, "/v1/chat/completions", req.body())
        return timing.prompt_tokens, timing.completion_tokens, timing.first_text_s


async def measure(sides: dict, requests: list[StreamRequest], levels: list[int], repeats: int,
                  warmup: list[StreamRequest]) -> list[Run]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    for side in sides.values():
        side.prepare(requests + warmup)
    runs: list[Run] = []
    columns = (TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[rate]}"))
    with Progress(*columns, refresh_per_second=2) as progress:
        for name, side in sides.items():
            task = progress.add_task(f"warm-up, {name}", total=len(warmup), rate="")
            await closed_loop(warmup, len(warmup), side, Run(name, len(warmup)),
                              lambda run, task=task: progress.advance(task))
        for concurrency in levels:
            for repeat in range(repeats):
                for name, side in sides.items():
                    run = Run(name, concurrency)
                    started = time.perf_counter()
                    label = f"{concurrency} streams, {name}" + (f" #{repeat + 1}" if repeats > 1 else "")
                    task = progress.add_task(label, total=len(requests), rate="")

                    def advance(run, task=task, started=started):
                        rate = run.completion_tokens / max(time.perf_counter() - started, 1e-9)
                        progress.update(task, advance=1, rate=f"{rate:.1f} tok/s")

                    cpu = side.loop_cpu_s()
                    await closed_loop(requests, concurrency, side, run, advance)
                    if cpu is not None:
                        run.loop_cpu_s = side.loop_cpu_s() - cpu
                    runs.append(run)
    return runs


def summarize(runs: list[Run], levels: list[int]) -> list[dict]:
    """Per concurrency: each side's median tokens/s over repeats, pooled TTFT percentiles, the ratio."""
    out = []
    for concurrency in levels:
        row: dict = {"concurrency": concurrency}
        for side in ("engine", "server"):
            mine = [r for r in runs if r.side == side and r.concurrency == concurrency]
            ttft = [t for r in mine for t in r.first_text_s]
            row[side] = {
                "tokens_per_s": statistics.median(r.tokens_per_s for r in mine),
                "ttft_p50_s": percentile(ttft, 50), "ttft_p95_s": percentile(ttft, 95),
                "loop_us_per_token": _median([r.loop_us_per_token for r in mine]),
                "elapsed_s": [round(r.elapsed_s, 3) for r in mine],
                "prompt_tokens": [r.prompt_tokens for r in mine],
                "completion_tokens": [r.completion_tokens for r in mine],
                "errors": sum(r.errors for r in mine)}
        row["ratio"] = row["server"]["tokens_per_s"] / row["engine"]["tokens_per_s"]
        row["same_work"] = (row["server"]["prompt_tokens"] == row["engine"]["prompt_tokens"]
                            and row["server"]["completion_tokens"] == row["engine"]["completion_tokens"])
        out.append(row)
    return out


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def markdown(meta: dict, rows: list[dict], png: str | None) -> str:
    lines = [f"# Server vs engine, same request stream: {meta['model']}", "",
             f"{meta['date']}, {meta['cpu']}, {meta['cores']} cores, load average {meta['load']} at the start; "
             f"{meta['requests']} streaming chat requests per concurrency ({meta['prompt_tokens']} prompt tokens "
             f"in all, {meta['max_tokens']} completion tokens each, EOS ignored, temperature {TEMPERATURE}, "
             f"seeded), closed loop, max batch {meta['max_batch_size']}, prefix caching off; "
             f"{meta['repeats']} run(s) per side, alternating.", "",
             "| concurrent streams | engine tok/s | server tok/s | server / engine | TTFT p50 / p95 engine (s) | "
             "TTFT p50 / p95 server (s) | event-loop CPU per token, engine / server (µs) | same tokens counted |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        e, s = r["engine"], r["server"]
        lines.append(f"| {r['concurrency']} | {e['tokens_per_s']:.1f} | {s['tokens_per_s']:.1f} | {r['ratio']:.1%} | "
                     f"{e['ttft_p50_s']:.3f} / {e['ttft_p95_s']:.3f} | {s['ttft_p50_s']:.3f} / {s['ttft_p95_s']:.3f} | "
                     f"{_us(e['loop_us_per_token'])} / {_us(s['loop_us_per_token'])} | "
                     f"{'yes' if r['same_work'] else 'NO'} |")
    errors = sum(r[side]["errors"] for r in rows for side in ("engine", "server"))
    lines += ["", f"Errors: {errors}. TTFT: seconds from sending a request to its first output carrying text "
                  "(queueing behind the batch included). Event-loop CPU: CPU time of the thread running the "
                  "side's event loop over the run, per completion token (engine: this process's coroutines "
                  "reading the async engine; server: `pio serve`'s main thread, all of the HTTP path) - the "
                  "Python that competes with the engine's thread for the GIL and with its kernels for the cores."]
    if png:
        lines += ["", f"![chart]({png})"]
    return "\n".join(lines) + "\n"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def chart(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [str(r["concurrency"]) for r in rows]
    x = range(len(rows))
    colours = {"engine": "#999", "server": "#3a7"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for k, side in enumerate(("engine", "server")):
        left.bar([i + (k - 0.5) * 0.38 for i in x], [r[side]["tokens_per_s"] for r in rows], 0.38,
                 color=colours[side], label=side)
    for i, r in enumerate(rows):
        left.annotate(f"{r['ratio']:.0%}", (i + 0.19, r["server"]["tokens_per_s"]), ha="center", va="bottom",
                      fontsize=8)
    left.set_xticks(list(x), levels)
    left.set_xlabel("concurrent streams")
    left.set_ylabel("completion tokens/s")
    left.set_title("throughput (label: server / engine)")
    left.legend(fontsize=8)
    for side in ("engine", "server"):
        right.plot(levels, [r[side]["ttft_p50_s"] for r in rows], "o-", color=colours[side], label=f"{side} p50")
        right.plot(levels, [r[side]["ttft_p95_s"] for r in rows], "s--", color=colours[side], label=f"{side} p95")
    right.set_yscale("log")
    right.set_xlabel("concurrent streams")
    right.set_ylabel("seconds")
    right.set_title("time to first token")
    right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out: Path | None, text_for, data: dict, draw) -> None:
    """Prints the markdown; with ``out``, writes OUT.md, OUT.json (``data``) and OUT.png (``draw(path)``).
    ``text_for(png_name or None)`` makes the markdown, linking the chart when there is one."""
    png = out.with_suffix(".png") if out else None
    text = text_for(png.name if png else None)
    print(text)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".md").write_text(text)
        out.with_suffix(".json").write_text(json.dumps(data, indent=1))
        draw(png)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint (default: the default SmolLM2 GGUF)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--requests", type=int, default=128, help="requests per concurrency and side")
    parser.add_argument("--max-tokens", type=int, default=32, help="completion tokens per request")
    parser.add_argument("--max-batch-size", type=int, default=32, help="as pio serve's --max-batch-size")
    parser.add_argument("--max-seq-len", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for both sides (default: torch's)")
    parser.add_argument("--out", type=Path, help="write OUT.md, OUT.json and OUT.png")
    args = parser.parse_args(argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch starts, here and in the server
    import inference_pio
    from inference_pio.defaults import default_model_path

    path = args.model or default_model_path()
    load = os.getloadavg()[0]
    requests = [StreamRequest(i, args.max_tokens) for i in range(args.requests)]
    warmup = [StreamRequest(args.requests + i, 4) for i in range(4)]
    proc, url = spawn(str(path), "--name", MODEL_NAME, "--no-prefix-caching", "--max-batch-size",
                      str(args.max_batch_size), "--max-seq-len", str(args.max_seq_len))
    model = None
    try:
        model = inference_pio.load(path, max_batch_size=args.max_batch_size, max_seq_len=args.max_seq_len,
                                   enable_prefix_caching=False)
        sides = {"engine": EngineSide(model), "server": ServerSide(url, proc.pid)}
        runs = asyncio.run(measure(sides, requests, args.concurrency, args.repeats, warmup))
        prompt_tokens = sides["engine"].prompt_tokens(requests)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if model is not None:
            model.close()
    rows = summarize(runs, args.concurrency)
    meta = {"model": path.name, "date": time.strftime("%Y-%m-%d"), "cpu": cpu_model_name(),
            "cores": os.cpu_count(), "load": f"{load:.1f}", "requests": args.requests, "max_tokens": args.max_tokens,
            "prompt_tokens": prompt_tokens, "max_batch_size": args.max_batch_size, "repeats": args.repeats,
            "threads": args.threads}
    write_report(args.out, lambda png: markdown(meta, rows, png), {"meta": meta, "levels": rows},
                 lambda path: chart(rows, path, f"{meta['model']}: server vs engine, same requests"))
    bad = [r for r in rows if not r["same_work"] or r["engine"]["errors"] or r["server"]["errors"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
