"""``pio bench [MODEL]``: prompt (prefill) and decode tokens/s, optionally beside transformers.

Prefill is timed as a 1-token generation of a ``--prompt-tokens`` prompt; decode as the extra time
of a ``1 + --new-tokens`` generation over that, EOS ignored. Each figure is the median of
``--repeats`` runs after one warm-up. For claims, use the pytest-benchmark suites in benchmarks/.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import typer
from rich.table import Table

from . import _options as opt
from ._console import console, err_console
from ._models import open_model, resolve_model_path


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _prompt_ids(vocab_size: int, n: int) -> list[int]:
    gen = torch.Generator().manual_seed(0)
    # Skip the low ids, where special tokens usually sit.
    return torch.randint(min(1000, vocab_size // 2), vocab_size, (n,), generator=gen).tolist()


def bench_ours(model, prompt: list[int], new_tokens: int, repeats: int) -> tuple[float, float]:
    def run(n):
        return lambda: model.generate([prompt], max_tokens=n, temperature=0, ignore_eos=True)

    prefill = _median_time(run(1), repeats)
    total = _median_time(run(1 + new_tokens), repeats)
    return len(prompt) / prefill, new_tokens / max(total - prefill, 1e-9)


def bench_transformers(path: Path, prompt: list[int], new_tokens: int, repeats: int) -> tuple[float, float]:
    try:
        from transformers import AutoModelForCausalLM
    except ImportError as e:
        raise RuntimeError("--transformers needs the transformers package (pip install transformers)") from e
    kwargs = {"dtype": torch.float32}
    if path.suffix == ".gguf":
        kwargs["gguf_file"] = path.name
        path = path.parent
    hf = AutoModelForCausalLM.from_pretrained(str(path), **kwargs).eval()
    ids = torch.tensor([prompt])

    def run(n):
        def go():
            with torch.no_grad():
                hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                            attention_mask=torch.ones_like(ids))
        return go

    prefill = _median_time(run(1), repeats)
    total = _median_time(run(1 + new_tokens), repeats)
    return len(prompt) / prefill, new_tokens / max(total - prefill, 1e-9)


def register(app: typer.Typer) -> None:
    @app.command(help="Measure prompt and decode tokens/s of MODEL (default: SmolLM2-135M-Instruct).")
    def bench(
        model_spec: str = typer.Argument(None, metavar="[MODEL]", show_default=False),
        prompt_tokens: int = typer.Option(512, "--prompt-tokens", min=1),
        new_tokens: int = typer.Option(128, "--new-tokens", min=1),
        repeats: int = typer.Option(3, "--repeats", min=1),
        transformers: bool = typer.Option(False, "--transformers", help="Also run transformers on the same checkpoint."),
        dtype: str = opt.Dtype,
    ) -> int:
        path = resolve_model_path(model_spec)
        model = open_model(str(path), dtype=dtype, max_seq_len=prompt_tokens + new_tokens + 1,
                           enable_prefix_caching=False)  # every repeat reuses one prompt: compute it each time
        try:
            prompt = _prompt_ids(model.vocab_size, prompt_tokens)
            with err_console.status("timing inference-pio ..."):
                rows = [("inference-pio", *bench_ours(model, prompt, new_tokens, repeats))]
        finally:
            model.close()
        if transformers:
            with err_console.status("timing transformers ..."):
                rows.append(("transformers", *bench_transformers(path, prompt, new_tokens, repeats)))
        table = Table("backend", "prompt tok/s", "decode tok/s", "prompt ×", "decode ×",
                      title=f"{path.name}: {prompt_tokens}-token prompt, {new_tokens} new tokens, "
                            f"{torch.get_num_threads()} threads, median of {repeats}")
        base = rows[-1]
        for name, p, d in rows:
            table.add_row(name, f"{p:.1f}", f"{d:.1f}", f"{p / base[1]:.2f}", f"{d / base[2]:.2f}")
        console.print(table)
        return 0
