"""``pio generate [MODEL] PROMPT``: stream a completion, then a one-line speed summary."""

from __future__ import annotations

import sys

import typer

from . import _options as opt
from ._console import err_console
from ._models import open_model
from ._stream import stream_tokens, write_stdout


def split_model_and_prompt(args: list[str]) -> tuple[str | None, str]:
    """``[MODEL] PROMPT``: one argument is the prompt (default model), two are model and prompt."""
    if len(args) == 1:
        return None, args[0]
    if len(args) == 2:
        return args[0], args[1]
    raise typer.BadParameter(f"expected [MODEL] PROMPT, got {len(args)} arguments (quote the prompt)")


def register(app: typer.Typer) -> None:
    @app.command(help="Generate text from PROMPT with MODEL (default: SmolLM2-135M-Instruct), streaming it.")
    def generate(
        args: list[str] = typer.Argument(..., metavar="[MODEL] PROMPT", show_default=False),
        max_tokens: int = opt.MaxTokens,
        temperature: float = opt.Temperature,
        top_p: float = opt.TopP,
        seed: int = opt.Seed,
        chat: bool = typer.Option(False, "--chat", help="Wrap PROMPT as a user message in the model's chat template."),
        system: str = typer.Option(None, "--system", help="System message (with --chat)."),
        dtype: str = opt.Dtype,
        max_seq_len: int = opt.MaxSeqLen,
    ) -> int:
        model_spec, prompt = split_model_and_prompt(args)
        params = opt.sampling_params(max_tokens, temperature, top_p, seed)
        model = open_model(model_spec, **opt.load_options(dtype, max_seq_len))
        try:
            if chat:
                messages = ([{"role": "system", "content": system}] if system else []) + \
                           [{"role": "user", "content": prompt}]
                ids = model.apply_chat_template(messages)
            else:
                if system:
                    raise typer.BadParameter("--system needs --chat")
                ids = model.tokenize(prompt)
            stats = stream_tokens(model, ids, params, write_stdout)
        finally:
            model.close()
        sys.stdout.write("\n")
        sys.stdout.flush()
        err_console.print(f"[dim]{stats.summary()}[/]", highlight=False)
        return 0
