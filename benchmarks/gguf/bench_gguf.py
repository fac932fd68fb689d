"""GGUF models on the CPU: ours (each activation format) vs llama.cpp (llama-bench, llama-cpp-python)
vs transformers, on the same files, threads and token ids, in one run.

Models: the real SmolLM2-135M-Instruct Q4_1 file (``inference_pio.defaults.default_model_path()``)
and random-weight GGUFs of TinyLlama-1.1B's shape in Q4_0, Q8_0 and Q4_K_M, written by
``random_gguf.py`` into a cache folder (no downloads). Workloads: decode at batch 1, 8 and 32
(``--new-tokens`` new tokens per sequence after a short prompt, EOS ignored; tokens/s counts every
sequence's tokens) and a ``--prompt-tokens`` prompt to its first token. Ours runs with
``INFERENCE_PIO_QUANTIZE_INPUT`` set to each of ``--formats``; llama-bench and llama-cpp-python
measure one sequence, llama-batched-bench (when built beside llama-bench) the larger batches. The bandwidth bound of a decode step is
the machine's copy bandwidth (measured in this run) over the bytes of weight the step reads; at
batch B the step yields B tokens. Results: ``--out`` .md (tables, ratios, targets), .json, .png.

    LLAMA_BENCH=/tmp/llamacpp/llama_cpp_python-0.3.36/build/bin/llama-bench \\
    python -m benchmarks.gguf.bench_gguf --threads 2 --llama-cpp-python /tmp/llama-venv/bin/python \\
        --out benchmarks/results/gguf-cpu-$(date +%F).md

``--smoke`` checks the harness in a minute: tiny random shapes, a few tokens, one repeat. How to
build llama-bench and give llama-cpp-python the same library: ``llama_bench.py``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from . import llama_bench
from ..report import cpu_model_name
from .bench_smollm2 import best, decode_bytes, measure_llama_cpp
from .random_gguf import TINYLLAMA_1_1B, LlamaShape, cached_random_gguf

QUANTIZE_INPUT_ENV = "INFERENCE_PIO_QUANTIZE_INPUT"
BATCHES = (1, 8, 32)
RANDOM_PRESETS = ("Q4_0", "Q8_0", "Q4_K_M")
SMOKE_SHAPE = LlamaShape(vocab_size=1024, hidden_size=256, intermediate_size=512, num_layers=2, num_heads=4,
                         num_kv_heads=2)
DECODE_PROMPT = 16  # tokens of each decode sequence's prompt
# Targets from issue 16 (ratios printed in the results).
TARGET_DECODE_SMOLLM2, TARGET_DECODE_LARGE, TARGET_PROMPT, TARGET_BATCH32 = 1.5, 1.1, 1.5, 5.0


def prompts(vocab: int, batch: int, n: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, n), generator=g).tolist()


def _quantized_linear_module():
    return importlib.import_module("inference_pio.ops.quantized_linear")


def supported_formats() -> list[str]:
    """The activation formats this build's quantized kernels accept, by name."""
    return list(getattr(_quantized_linear_module(), "INPUT_MODES", {"none": 0, "int8": 1}))


def _env_value(fmt: str) -> str:
    """The environment value selecting ``fmt`` (builds before named modes took 0 / 1)."""
    return fmt if hasattr(_quantized_linear_module(), "INPUT_MODES") else {"none": "0", "int8": "1"}[fmt]


def decode_rate(tokens: int, full_s: float, prefill_s: float) -> float:
    """Decode tokens/s from a run with and without the decode; NaN when noise hides the difference."""
    return tokens / (full_s - prefill_s) if full_s > prefill_s else float("nan")


def measure_workloads(run, vocab: int, args) -> dict:
    """``run(ids, n)`` generates n tokens for each prompt of ``ids``: decode tokens/s per batch (a run
    with the decode minus one without), prompt tokens/s, and the batch-1 prefill seconds."""
    result = {"decode_tps": {}}
    for b in args.batches:
        ids = prompts(vocab, b, DECODE_PROMPT, seed=b)
        prefill = best(lambda: run(ids, 1), args.repeats)
        full = best(lambda: run(ids, 1 + args.new_tokens), args.repeats)
        result["decode_tps"][b] = decode_rate(b * args.new_tokens, full, prefill)
        if b == 1:
            result["prefill_b1_s"] = prefill
    long_prompt = prompts(vocab, 1, args.prompt_tokens, seed=7)
    result["prompt_tps"] = args.prompt_tokens / best(lambda: run(long_prompt, 1), args.repeats)
    return result


def measure_ours(path: Path, fmt: str, vocab: int, args) -> dict:
    """Decode tokens/s per batch and prompt tokens/s; also the first request's decode tokens/s
    right after loading (the weights paged in and the buffers warmed up at load, it should match)."""
    import inference_pio
    from inference_pio.engine.sampler import SamplingParams

    os.environ[QUANTIZE_INPUT_ENV] = _env_value(fmt)
    try:
        start = time.perf_counter()
        model = inference_pio.load(path, max_seq_len=max(args.prompt_tokens, DECODE_PROMPT + args.new_tokens) + 8,
                                   max_batch_size=max(args.batches),
                                   enable_prefix_caching=False)  # repeated prompts must be computed each time
        load_s = time.perf_counter() - start
        engine = model.engine

        def run(ids, n):
            engine.generate(ids, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))

        first = prompts(vocab, 1, DECODE_PROMPT, seed=1)
        t0 = time.perf_counter()
        run(first, 1 + args.new_tokens)
        first_request_s = time.perf_counter() - t0
        result = {"load_s": load_s, **measure_workloads(run, vocab, args)}
        result["first_request_decode_tps"] = decode_rate(args.new_tokens, first_request_s,
                                                          result.pop("prefill_b1_s", first_request_s))
        result["served_decode_tps"] = served_decode_rate(model, vocab, args)
        model.close()
        return result
    finally:
        del os.environ[QUANTIZE_INPUT_ENV]


def served_decode_rate(model, vocab: int, args) -> float:
    """Batch-1 decode tokens/s through the async engine (its stepping thread), the path ``pio serve``
    and ``pio chat`` take, as opposed to ``engine.generate`` on the calling thread."""
    import asyncio

    from inference_pio.engine.sampler import SamplingParams

    engine = model.async_engine()
    ids = prompts(vocab, 1, DECODE_PROMPT, seed=1)[0]

    def run(n):
        async def drain():
            async for _ in engine.generate(ids, SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)):
                pass
        asyncio.run(drain())

    return decode_rate(args.new_tokens, best(lambda: run(1 + args.new_tokens), args.repeats),
                       best(lambda: run(1), args.repeats))


def measure_transformers(path: Path, vocab: int, args) -> dict:
    """The same GGUF dequantized to float32 by transformers; greedy ``generate``."""
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    load_s = time.perf_counter() - start

    def generate(ids, n):
        with torch.no_grad():
            hf.generate(torch.tensor(ids), attention_mask=torch.ones(len(ids), len(ids[0]), dtype=torch.long),
                        max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

    result = {"load_s": load_s, **measure_workloads(generate, vocab, args)}
    result.pop("prefill_b1_s", None)
    del hf
    return result


def measure_llama_cpp_python(python: str, path: Path, vocab: int, args) -> dict:
    r = measure_llama_cpp(python, path, prompts(vocab, 1, DECODE_PROMPT, seed=1)[0],
                          prompts(vocab, 1, args.prompt_tokens, seed=7)[0], args.threads, args.repeats,
                          new_tokens=args.new_tokens)
    return {"decode_tps": {1: r["decode_tps"]}, "prompt_tps": r["prompt_tps"], "load_s": r["load_s"],
            "version": r.get("version")}


def measure_llama_bench(binary: Path, path: Path, args) -> dict:
    """llama-bench (batch 1, prompt), and llama-batched-bench for the larger batches when built."""
    r = llama_bench.measure(binary, path, args.threads, args.prompt_tokens, args.new_tokens, args.repeats)
    decode = {1: r["decode_tps"]}
    batched = llama_bench.find_batched_bench(binary)
    larger = [b for b in args.batches if b > 1]
    if batched is not None and larger:
        decode.update(llama_bench.measure_batched(batched, path, args.threads, DECODE_PROMPT, args.new_tokens, larger))
    return {"decode_tps": decode, "prompt_tps": r["prompt_tps"], "version": r["version"]}


def models(args) -> dict[str, tuple[Path, int]]:
    """name -> (GGUF path, vocabulary size) of every model measured."""
    out = {}
    if "smollm2" in args.models and not args.smoke:
        from inference_pio.defaults import default_model_path

        try:
            out["SmolLM2-135M Q4_1"] = (Path(default_model_path()), 49152)
        except FileNotFoundError as e:
            print(f"SmolLM2 skipped: {e}", flush=True)
    shape = SMOKE_SHAPE if args.smoke else TINYLLAMA_1_1B
    label = "tiny random" if args.smoke else "TinyLlama-1.1B shape"
    for preset in RANDOM_PRESETS:
        if preset.lower() in args.models:
            print(f"writing / finding the random {preset} GGUF ...", flush=True)
            out[f"{label} {preset}"] = (cached_random_gguf(preset, shape, args.cache), shape.vocab_size)
    return out


def bytes_per_step(path: Path) -> int:
    return decode_bytes(path)


def run_all(args) -> tuple[dict, dict]:
    binary = llama_bench.find_llama_bench(args.llama_bench)
    notes = []
    if binary is None:
        notes.append("llama-bench: not measured (no binary: pass --llama-bench or set LLAMA_BENCH).")
    elif llama_bench.find_batched_bench(binary) is None:
        notes.append("llama.cpp batch > 1: not measured (no llama-batched-bench beside llama-bench).")
    if not args.llama_cpp_python:
        notes.append("llama-cpp-python: not measured (pass --llama-cpp-python /path/to/venv/bin/python).")
    formats = [f for f in args.formats if f in supported_formats()]
    notes += [f"ours {f}: not measured (this build has no {f} activation format)." for f in args.formats
              if f not in formats]
    results = {}
    for name, (path, vocab) in models(args).items():
        print(f"== {name}: {path}", flush=True)
        r = {}
        for fmt in formats:
            r[f"ours {fmt}"] = measure_ours(path, fmt, vocab, args)
            print(f"ours {fmt}", r[f"ours {fmt}"], flush=True)
        for label, fn in (("llama-bench", binary and (lambda: measure_llama_bench(binary, path, args))),
                          ("llama-cpp-python", args.llama_cpp_python and
                           (lambda: measure_llama_cpp_python(args.llama_cpp_python, path, vocab, args))),
                          ("transformers", not args.skip_transformers and
                           (lambda: measure_transformers(path, vocab, args)))):
            if not fn:
                continue
            try:
                r[label] = fn()
                print(label, r[label], flush=True)
            except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                msg = getattr(exc, "stderr", None) or str(exc)
                notes.append(f"{label} on {name}: failed ({str(msg).strip()[-300:]}).")
        results[name] = {"path": str(path), "bytes_per_step": bytes_per_step(path), "results": r}
    return results, {"notes": notes, "formats": formats}


def reference_of(r: dict) -> tuple[str, dict] | tuple[None, None]:
    """llama.cpp as its users quote it: llama-bench, else llama-cpp-python."""
    for label in ("llama-bench", "llama-cpp-python"):
        if label in r:
            return label, r[label]
    return None, None


def default_format(formats: list[str]) -> str:
    return "int16" if "int16" in formats else formats[0]


def report(results: dict, meta: dict, out: Path) -> str:
    batches = meta["batches"]
    lines = [f"# GGUF models on the CPU: ours vs llama.cpp vs transformers, {meta['date']}", "",
             f"{meta['cpu']}; {meta['threads']} thread(s); copy bandwidth {meta['copy_gbs']:.1f} GB/s (read + write, "
             f"measured in this run); load average at start {meta['load']}. Decode: {meta['new_tokens']} new tokens per "
             f"sequence after {DECODE_PROMPT}-token prompts (EOS ignored), tokens/s over all sequences; prompt: "
             f"{meta['prompt_tokens']} tokens to the first one. Best of {meta['repeats']} (llama-bench: mean of "
             f"{meta['repeats']}). Ours: `{QUANTIZE_INPUT_ENV}` = each activation format; default "
             f"`{meta['default_format']}`.", ""]
    targets = []
    for name, entry in results.items():
        r, bound = entry["results"], meta["copy_gbs"] * 1e9 / entry["bytes_per_step"]
        ref_name, ref = reference_of(r)
        lines += [f"## {name}", "", f"{entry['bytes_per_step'] / 1e6:.1f} MB of weights per decode step: bandwidth "
                  f"bound {bound:.0f} tokens/s at batch 1 (B x that at batch B).", ""]
        head = ["implementation"] + [f"decode b{b} tok/s" for b in batches] + ["prompt tok/s", "b1 % of bound"]
        if ref:
            head += [f"decode b1 vs {ref_name}", f"prompt vs {ref_name}"]
        lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for label, x in r.items():
            d = x["decode_tps"]
            row = [label] + [f"{d[b]:.1f}" if b in d else "-" for b in batches]
            row += [f"{x['prompt_tps']:.1f}", f"{d[1] / bound:.0%}" if 1 in d else "-"]
            if ref:
                row += [f"{d[1] / ref['decode_tps'][1]:.2f}x" if 1 in d else "-",
                        f"{x['prompt_tps'] / ref['prompt_tps']:.2f}x"]
            lines.append("| " + " | ".join(row) + " |")
        ours = r.get(f"ours {meta['default_format']}")
        if ours and "first_request_decode_tps" in ours:
            lines += ["", f"First request after loading (ours, default): {ours['first_request_decode_tps']:.1f} decode "
                      f"tokens/s vs {ours['decode_tps'][1]:.1f} steady."]
        if ours and "served_decode_tps" in ours:
            lines += ["", f"Served path (ours, default; the async engine's thread, as `pio serve` / `pio chat` run): "
                      f"{ours['served_decode_tps']:.1f} decode tokens/s at batch 1"
                      + (f" ({ours['served_decode_tps'] / ref['decode_tps'][1]:.2f}x {ref_name})." if ref else ".")]
        lines.append("")
        if ours:
            targets += _targets(name, ours, ref_name, ref)
    lines += ["## Targets (issue 16), default path", "", "| model | target | measured | met |", "| --- | --- | --- | --- |"]
    lines += targets or ["| - | - | nothing to compare | - |"]
    lines += [""] + [f"- {n}" for n in meta["notes"]] + ["", f"![chart]({out.with_suffix('.png').name})"]
    return "\n".join(lines) + "\n"


def _targets(name: str, ours: dict, ref_name: str | None, ref: dict | None) -> list[str]:
    rows = []

    def add(target: str, value: float, want: float):
        rows.append(f"| {name} | {target} >= {want}x | {value:.2f}x | {'yes' if value >= want else 'NO'} |")

    if ref:
        want = TARGET_DECODE_SMOLLM2 if "SmolLM2" in name else TARGET_DECODE_LARGE
        add(f"decode b1 vs {ref_name}", ours["decode_tps"][1] / ref["decode_tps"][1], want)
        add(f"prompt vs {ref_name}", ours["prompt_tps"] / ref["prompt_tps"], TARGET_PROMPT)
    d = ours["decode_tps"]
    if 1 in d and 32 in d:
        add("decode b32 vs b1", d[32] / d[1], TARGET_BATCH32)
    return rows


def chart(results: dict, meta: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    if not names:
        return
    fig, axes = plt.subplots(len(names), 2, figsize=(11, 3.2 * len(names)), squeeze=False)
    for (left, right), name in zip(axes, names):
        r = results[name]["results"]
        labels = list(r)
        width = 0.8 / max(1, len(labels))
        for i, label in enumerate(labels):
            d = r[label]["decode_tps"]
            xs = [j + i * width for j, b in enumerate(meta["batches"]) if b in d]
            left.bar(xs, [d[b] for b in meta["batches"] if b in d], width, label=label)
        left.set_xticks([j + 0.4 - width / 2 for j in range(len(meta["batches"]))],
                        [f"batch {b}" for b in meta["batches"]])
        bound = meta["copy_gbs"] * 1e9 / results[name]["bytes_per_step"]
        left.axhline(bound, color="#c33", linestyle="--", linewidth=1, label=f"b1 bandwidth bound {bound:.0f}")
        left.set_yscale("log")
        left.set_ylabel("decode tokens/s")
        left.set_title(f"{name}: decode", fontsize=9)
        left.legend(fontsize=7)
        right.bar(labels, [r[label]["prompt_tps"] for label in labels], color="#37a")
        right.set_title(f"{name}: {meta['prompt_tokens']}-token prompt", fontsize=9)
        right.set_ylabel("tokens/s")
        right.tick_params(axis="x", labelrotation=20, labelsize=7)
    fig.suptitle(f"{meta['cpu']}, {meta['threads']} thread(s)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=list(BATCHES))
    parser.add_argument("--formats", type=lambda s: s.split(","), default=["none", "int16", "int8"],
                        help="ours' activation formats (INFERENCE_PIO_QUANTIZE_INPUT values)")
    parser.add_argument("--models", type=lambda s: s.lower().split(","), default=["smollm2", "q4_0", "q8_0", "q4_k_m"])
    parser.add_argument("--llama-bench", help=f"llama-bench binary (default ${llama_bench.LLAMA_BENCH_ENV})")
    parser.add_argument("--llama-cpp-python", help="python of a virtual environment with llama-cpp-python")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--cache", type=Path, default=None, help="folder for the random GGUFs (default: a cache)")
    parser.add_argument("--smoke", action="store_true", help="tiny random shapes, few tokens: checks the harness")
    parser.add_argument("--out", type=Path, default=Path(f"benchmarks/results/gguf-cpu-{time.strftime('%Y-%m-%d')}.md"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.new_tokens, args.prompt_tokens = 1, 4, 32
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from benchmarks.conftest import measure_copy_bandwidth_gbs

    load = os.getloadavg()[0]
    results, extra = run_all(args)
    meta = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model_name(), "threads": args.threads,
            "load": f"{load:.1f}", "copy_gbs": measure_copy_bandwidth_gbs(), "repeats": args.repeats,
            "new_tokens": args.new_tokens, "prompt_tokens": args.prompt_tokens, "batches": args.batches,
            "default_format": default_format(extra["formats"]), "smoke": args.smoke, **extra}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = report(results, meta, args.out)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    chart(results, meta, args.out.with_suffix(".png"))
    print(text)


if __name__ == "__main__":
    sys.exit(main())
