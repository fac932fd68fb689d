"""``pio chat [MODEL]``: an interactive conversation through the model's chat template."""

from __future__ import annotations

import sys

import typer

from . import _options as opt
from ._console import console, err_console
from ._models import open_model
from ._stream import stream_tokens, write_stdout

HELP = "Type a message; /reset clears the history, /exit (or Ctrl-D) quits."


def register(app: typer.Typer) -> None:
    @app.command(help="Chat with MODEL (default: SmolLM2-135M-Instruct), keeping the conversation history.")
    def chat(
        model_spec: str = typer.Argument(None, metavar="[MODEL]", show_default=False),
        max_tokens: int = opt.MaxTokens,
        temperature: float = opt.Temperature,
        top_p: float = opt.TopP,
        seed: int = opt.Seed,
        system: str = typer.Option(None, "--system", help="System message at the start of the conversation."),
        dtype: str = opt.Dtype,
        max_seq_len: int = opt.MaxSeqLen,
    ) -> int:
        params = opt.sampling_params(max_tokens, temperature, top_p, seed)
        model = open_model(model_spec, **opt.load_options(dtype, max_seq_len))
        start = [{"role": "system", "content": system}] if system else []
        history = list(start)
        err_console.print(f"[dim]{HELP}[/]")
        try:
            while True:
                try:
                    line = console.input("[bold green]you>[/] ")
                except EOFError:
                    break
                text = line.strip()
                if text in ("/exit", "/quit"):
                    break
                if text == "/reset":
                    history = list(start)
                    continue
                if not text:
                    continue
                history.append({"role": "user", "content": text})
                console.print("[bold blue]model>[/] ", end="")
                stats = stream_tokens(model, model.apply_chat_template(history), params, write_stdout)
                sys.stdout.write("\n")
                err_console.print(f"[dim]{stats.summary()}[/]", highlight=False)
                history.append({"role": "assistant", "content": stats.text})
        finally:
            model.close()
        return 0
