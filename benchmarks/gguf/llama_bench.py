"""llama.cpp's own benchmark tool, ``llama-bench``, as the reference its users quote.

Built from the same vendored source as llama-cpp-python (never our dependency), e.g.::

    pip download llama-cpp-python==0.3.36 --no-deps --no-binary :all: -d /tmp/llamacpp
    cd /tmp/llamacpp && tar xzf llama_cpp_python-0.3.36.tar.gz && cd llama_cpp_python-0.3.36
    cmake -S vendor/llama.cpp -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \\
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
    cmake --build build --target llama-bench -j

and found through ``--llama-bench PATH`` or ``LLAMA_BENCH=PATH`` (``LLAMA_BENCH_ARGS`` adds options).
Decode of several sequences at once is ``llama-batched-bench`` (target ``llama-batched-bench``),
found beside llama-bench or through ``LLAMA_BATCHED_BENCH``.
The same build serves llama-cpp-python without a second compile: copy the sdist's ``llama_cpp``
package into a virtual environment (with numpy, typing-extensions, diskcache, jinja2) and point
``LLAMA_CPP_LIB_PATH`` at ``build/bin`` (e.g. from the environment's ``sitecustomize.py``). It measures one sequence:
``-p N`` a prompt of N tokens in one batch, ``-n N`` N tokens generated one at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

LLAMA_BENCH_ENV = "LLAMA_BENCH"
LLAMA_BATCHED_BENCH_ENV = "LLAMA_BATCHED_BENCH"
LLAMA_BENCH_ARGS_ENV = "LLAMA_BENCH_ARGS"  # extra options, e.g. "--repack 0" where repacking fails


def find_llama_bench(path: str | None) -> Path | None:
    """The binary given, else ``$LLAMA_BENCH``, else ``llama-bench`` on PATH; None when there is none."""
    candidate = path or os.environ.get(LLAMA_BENCH_ENV) or shutil.which("llama-bench")
    if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
        return Path(candidate)
    return None


def _run(binary: Path, model: Path, threads: int, repeats: int, args: list[str]) -> dict:
    cmd = [str(binary), "-m", str(model), "-t", str(threads), "-r", str(repeats), "-o", "json", *args]
    cmd += os.environ.get(LLAMA_BENCH_ARGS_ENV, "").split()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=3600)
    rows = json.loads(done.stdout)
    if len(rows) != 1:
        raise RuntimeError(f"llama-bench printed {len(rows)} results for {' '.join(cmd)}")
    return rows[0]


def find_batched_bench(llama_bench_binary: Path | None) -> Path | None:
    """``llama-batched-bench`` (``cmake --build build --target llama-batched-bench``): ``$LLAMA_BATCHED_BENCH``,
    else beside llama-bench; None when there is none."""
    candidate = os.environ.get(LLAMA_BATCHED_BENCH_ENV) or (
        llama_bench_binary and str(llama_bench_binary.with_name("llama-batched-bench")))
    if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
        return Path(candidate)
    return None


def measure_batched(binary: Path, model: Path, threads: int, prompt_tokens: int, new_tokens: int,
                    batches: list[int]) -> dict[int, float]:
    """Decode tokens/s over all sequences for each batch size (llama-batched-bench: ``batch``
    sequences with their own ``prompt_tokens``-token prompts, then ``new_tokens`` steps of one token each)."""
    ctx = max(batches) * (prompt_tokens + new_tokens) + 64
    cmd = [str(binary), "-m", str(model), "-t", str(threads), "-tb", str(threads), "-c", str(ctx), "-b", "2048",
           "-ub", "512", "-npp", str(prompt_tokens), "-ntg", str(new_tokens), "-npl", ",".join(map(str, batches)),
           "--output-format", "jsonl"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=3600)
    rows = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line.startswith("{")]
    return {int(r["pl"]): float(r["speed_tg"]) for r in rows}


def measure(binary: Path, model: Path, threads: int, prompt_tokens: int, new_tokens: int, repeats: int) -> dict:
    """``{"decode_tps", "prompt_tps", "version", "cpu"}``: mean tokens/s of ``repeats`` runs each."""
    prompt = _run(binary, model, threads, repeats, ["-p", str(prompt_tokens), "-n", "0"])
    decode = _run(binary, model, threads, repeats, ["-p", "0", "-n", str(new_tokens)])
    return {"decode_tps": float(decode["avg_ts"]), "prompt_tps": float(prompt["avg_ts"]),
            "version": f"{decode.get('build_commit', '?')} (build {decode.get('build_number', '?')})",
            "backend": decode.get("backends", "")}
