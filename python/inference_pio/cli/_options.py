"""Options shared by the generating commands, and the SamplingParams they make."""

from __future__ import annotations

import typer

from ..engine.sampler import SamplingParams

MaxTokens = typer.Option(256, "--max-tokens", "-n", min=1, help="Most new tokens to generate.")
Temperature = typer.Option(0.8, "--temperature", "-t", min=0.0, help="Sampling temperature; 0 = greedy.")
TopP = typer.Option(0.95, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass (1 = off).")
Seed = typer.Option(None, "--seed", help="Seed for reproducible sampling.")
Dtype = typer.Option("auto", "--dtype", help="Activation/weight dtype: auto, float32, bfloat16, float16.")
MaxSeqLen = typer.Option(None, "--max-seq-len", min=2, help="Context length to allocate (default: the model's, capped).")


def sampling_params(max_tokens: int, temperature: float, top_p: float, seed: int | None) -> SamplingParams:
    if top_p <= 0:
        raise typer.BadParameter("--top-p must be > 0")
    return SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)


def load_options(dtype: str, max_seq_len: int | None) -> dict:
    options = {"dtype": dtype}
    if max_seq_len is not None:
        options["max_seq_len"] = max_seq_len
    return options
