"""SmolLM2-135M-Instruct (the default model's Q4_1 GGUF) on the CPU: ours vs transformers vs llama.cpp.

Decode tokens/s (batch 1, 128 new tokens after a chat prompt, EOS ignored) and prompt tokens/s (a
512-token prompt, time to the first token), on ``--threads`` threads, best of ``--repeats``; the
same token ids go to every implementation. transformers loads the same GGUF (dequantized to
float32). llama.cpp runs through ``llama-cpp-python`` from another virtual environment
(``--llama-cpp-python /path/to/venv/bin/python``; it is never a dependency of ours) in a child
process. The decode bound is the machine's copy bandwidth over the bytes one token reads (every
quantized matrix once, the tied Q8_0 embedding as the LM head).

    python -m benchmarks.gguf.bench_smollm2 --llama-cpp-python /tmp/lcpp-venv/bin/python \
        --out benchmarks/results/smollm2-cpu-2026-12-04.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # also run as a script
from benchmarks.report import cpu_model_name  # noqa: E402

NEW_TOKENS = 128
PROMPT_TOKENS = 512
TEXT = ("The history of computing is a story of people finding ways to make machines do arithmetic, then logic, "
        "then everything else. Early mechanical calculators gave way to electronic computers, which filled rooms "
        "and consumed enormous power; transistors and integrated circuits then shrank them onto a single chip. ")


def best(fn, repeats: int) -> float:
    fn()  # warm-up: first-use allocations, lazy initialisation
    return min(_timed(fn) for _ in range(repeats))


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_ours(path: Path, chat: list[int], long_prompt: list[int], repeats: int) -> dict:
    import inference_pio
    from inference_pio.engine.sampler import SamplingParams

    start = time.perf_counter()
    # Prefix caching off: the repeats reuse one prompt, which must be computed every time.
    model = inference_pio.load(path, max_seq_len=1024, max_batch_size=1, enable_prefix_caching=False)
    load_s = time.perf_counter() - start
    engine = model.engine

    def run(ids, n):
        return engine.generate([ids], SamplingParams(max_tokens=n, temperature=0, ignore_eos=True))[0]

    prefill = best(lambda: run(chat, 1), repeats)
    full = best(lambda: run(chat, 1 + NEW_TOKENS), repeats)
    prompt = best(lambda: run(long_prompt, 1), repeats)
    tokens = list(run(chat, 1 + NEW_TOKENS).output_token_ids)
    model.close()
    return {"decode_tps": NEW_TOKENS / (full - prefill), "prompt_tps": len(long_prompt) / prompt, "load_s": load_s,
            "tokens": tokens}


def measure_transformers(path: Path, chat: list[int], long_prompt: list[int], repeats: int) -> dict:
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()
    load_s = time.perf_counter() - start

    def generate(ids, n):
        with torch.no_grad():
            return hf.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                               pad_token_id=0)[0, len(ids):].tolist()

    prefill = best(lambda: generate(chat, 1), repeats)
    full = best(lambda: generate(chat, 1 + NEW_TOKENS), repeats)
    prompt = best(lambda: generate(long_prompt, 1), repeats)
    return {"decode_tps": NEW_TOKENS / (full - prefill), "prompt_tps": len(long_prompt) / prompt, "load_s": load_s,
            "tokens": generate(chat, 1 + NEW_TOKENS)}


# Runs inside the llama-cpp-python environment; prints one JSON line.
_LLAMA_CPP_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import llama_cpp
    import llama_cpp.llama_cpp as C
    from llama_cpp import Llama
    # Extra CPU buffer types (AMX / repacked weights) crash in eval on this VM (AMX tiles not granted);
    # without them llama.cpp runs its standard CPU kernels (Q4_1 x Q8_1 integer dot products).
    default_params = C.llama_model_default_params
    def model_params():
        params = default_params()
        params.use_extra_bufts = False
        return params
    C.llama_model_default_params = model_params
    path, threads, repeats, new_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    chat, long_prompt = json.loads(sys.stdin.read())
    start = time.perf_counter()
    llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=1024, n_batch=512, verbose=False)
    load_s = time.perf_counter() - start
    def prefill(ids):
        llm.reset(); llm.eval(ids)
    def decode():
        llm.reset(); llm.eval(chat)
        tokens = [llm.sample(temp=0.0)]
        start = time.perf_counter()
        for _ in range(new_tokens):
            llm.eval([tokens[-1]])
            tokens.append(llm.sample(temp=0.0))
        return time.perf_counter() - start, tokens
    def best(fn):
        fn()
        return min(timed(fn) for _ in range(repeats))
    def timed(fn):
        start = time.perf_counter(); fn(); return time.perf_counter() - start
    prompt = best(lambda: prefill(long_prompt))
    runs = [decode() for _ in range(repeats + 1)][1:]
    print(json.dumps({"decode_tps": new_tokens / min(r[0] for r in runs), "prompt_tps": len(long_prompt) / prompt,
                      "load_s": load_s, "tokens": runs[0][1], "version": llama_cpp.__version__}))
""")


def measure_llama_cpp(python: str, path: Path, chat, long_prompt, threads: int, repeats: int,
                      new_tokens: int | None = None) -> dict:
    new_tokens = NEW_TOKENS if new_tokens is None else new_tokens
    done = subprocess.run([python, "-c", _LLAMA_CPP_SCRIPT, str(path), str(threads), str(repeats), str(new_tokens)],
                          input=json.dumps([chat, long_prompt]), capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def decode_bytes(path: Path) -> int:
    """Bytes of weights one decode step reads: every matrix once; the embedding table only when it
    is also the LM head (tied), else one row a token (left out)."""
    from inference_pio.weights import open_gguf

    tensors = open_gguf(path).tensors
    untied = any(t.name == "output.weight" for t in tensors)
    return sum(int(t.n_bytes) for t in tensors if not (untied and t.name == "token_embd.weight"))


def report(results: dict, meta: dict, out: Path) -> str:
    ours = results["inference-pio"]
    lines = [f"# SmolLM2-135M-Instruct (Q4_1 GGUF) on the CPU, {meta['date']}", "",
             f"{meta['cpu']}; {meta['threads']} thread(s); load average at start {meta['load']} (a shared machine). "
             f"Batch 1: decode = {NEW_TOKENS} new tokens after a {meta['chat_len']}-token chat prompt (EOS ignored), "
             f"prompt = a {PROMPT_TOKENS}-token prompt to the first token; best of {meta['repeats']}. "
             f"Same GGUF file and token ids everywhere.", "",
             "| implementation | decode tokens/s | prompt tokens/s | load s | decode vs ours | greedy tokens = ours |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        n = len(ours["tokens"])
        k = next((i for i, (a, b) in enumerate(zip(r["tokens"], ours["tokens"])) if a != b), min(n, len(r["tokens"])))
        agree = "-" if r is ours else f"all {n}" if k == n else f"first {k} of {n}"
        lines.append(f"| {name} | {r['decode_tps']:.1f} | {r['prompt_tps']:.1f} | {r['load_s']:.1f} | "
                     f"{r['decode_tps'] / ours['decode_tps']:.2f}x | {agree} |")
    bound = meta["bound_tps"]
    lines += ["", f"Decode bandwidth bound: {meta['copy_gbs']:.1f} GB/s copy bandwidth / {meta['model_mb']:.1f} MB "
              f"read per token = {bound:.0f} tokens/s; ours reaches {ours['decode_tps'] / bound:.0%} of it.", ""]
    if "llama.cpp" not in results:
        lines.append(f"llama.cpp: not measured ({meta.get('llama_cpp_note', 'no llama-cpp-python given')}).")
    lines.append(f"![chart]({out.with_suffix('.png').name})")
    return "\n".join(lines) + "\n"


def chart(results: dict, bound: float, path: Path, threads: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.bar(names, [results[n]["decode_tps"] for n in names], color="#3a7")
    left.axhline(bound, color="#c33", linestyle="--", label=f"bandwidth bound {bound:.0f}")
    left.set_title(f"decode, batch 1 ({NEW_TOKENS} tokens)")
    left.set_ylabel("tokens/s")
    left.legend(loc="upper right", fontsize=8)
    right.bar(names, [results[n]["prompt_tps"] for n in names], color="#37a")
    right.set_title(f"prompt ({PROMPT_TOKENS} tokens)")
    right.set_ylabel("tokens/s")
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    fig.suptitle(f"SmolLM2-135M-Instruct Q4_1, CPU, {threads} thread{'s' * (threads > 1)}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    global NEW_TOKENS, PROMPT_TOKENS  # --new-tokens / --prompt-tokens shorten a smoke run
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--llama-cpp-python", help="python of a virtual environment with llama-cpp-python")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--int8-inputs", action="store_true",
                        help="also measure ours with INFERENCE_PIO_QUANTIZE_INPUT=1 (Q8 activations, as llama.cpp)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/smollm2-cpu.md"))
    parser.add_argument("--new-tokens", type=int, default=NEW_TOKENS, help="decode length (smaller for a smoke run)")
    parser.add_argument("--prompt-tokens", type=int, default=PROMPT_TOKENS)
    args = parser.parse_args(argv)
    NEW_TOKENS, PROMPT_TOKENS = args.new_tokens, args.prompt_tokens
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)

    from benchmarks.conftest import measure_copy_bandwidth_gbs
    from inference_pio.defaults import default_model_path
    from inference_pio.tokenizer import Tokenizer

    path = default_model_path()
    load = os.getloadavg()[0]
    tokenizer = Tokenizer.from_gguf(path)
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Tell me a long story about a lighthouse."}],
                                         tokenize=True)
    long_prompt = (tokenizer.encode(TEXT) * (PROMPT_TOKENS // 40 + 1))[:PROMPT_TOKENS]
    results = {"inference-pio": measure_ours(path, chat, long_prompt, args.repeats)}
    print("inference-pio", {k: v for k, v in results["inference-pio"].items() if k != "tokens"}, flush=True)
    if args.int8_inputs:  # llama.cpp's scheme: activations rounded to Q8 blocks, integer dot products
        os.environ["INFERENCE_PIO_QUANTIZE_INPUT"] = "1"
        results["inference-pio int8-in"] = measure_ours(path, chat, long_prompt, args.repeats)
        del os.environ["INFERENCE_PIO_QUANTIZE_INPUT"]
        print("inference-pio int8-in", {k: v for k, v in results["inference-pio int8-in"].items() if k != "tokens"},
              flush=True)
    if not args.skip_transformers:
        results["transformers"] = measure_transformers(path, chat, long_prompt, args.repeats)
        print("transformers", {k: v for k, v in results["transformers"].items() if k != "tokens"}, flush=True)
    meta = {}
    if args.llama_cpp_python:
        try:
            results["llama.cpp"] = measure_llama_cpp(args.llama_cpp_python, path, chat, long_prompt, args.threads,
                                                     args.repeats)
            print("llama.cpp", {k: v for k, v in results["llama.cpp"].items() if k != "tokens"}, flush=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            meta["llama_cpp_note"] = f"it failed: {getattr(exc, 'stderr', exc)}"[-300:]
    copy_gbs = measure_copy_bandwidth_gbs()
    model_bytes = decode_bytes(path)
    meta.update(date=time.strftime("%Y-%m-%d"), cpu=cpu_model_name(), threads=args.threads,
                load=f"{load:.1f}", chat_len=len(chat), repeats=args.repeats, copy_gbs=copy_gbs,
                model_mb=model_bytes / 1e6, bound_tps=copy_gbs * 1e9 / model_bytes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = report(results, meta, args.out)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    chart(results, meta["bound_tps"], args.out.with_suffix(".png"), args.threads)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
