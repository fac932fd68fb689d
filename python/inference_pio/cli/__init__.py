"""The ``pio`` command line (typer + rich): one module per command group.

Errors print as one line on stderr with a non-zero exit code; ``pio --debug ...`` shows the
traceback instead.
"""

from __future__ import annotations

import sys

import click
import typer
from rich.markup import escape

from . import bench, chat, doctor, generate, models, plugins, serve
from ._console import err_console, state

app = typer.Typer(name="pio", help="inference-pio: fast LLM inference from Python.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    state.debug = debug


for module in (generate, chat, bench, serve, doctor):
    module.register(app)
app.add_typer(models.app, name="models")
app.add_typer(plugins.app, name="plugins")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pio`` and ``python -m inference_pio``; returns the exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    state.debug = "--debug" in args
    try:
        result = app(args=args, prog_name="pio", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    except click.ClickException as e:  # usage errors: click's own one-line message
        e.show(file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 -- the one place every failure becomes one clear line
        if state.debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(_describe(e))}", highlight=False, soft_wrap=True)
        return 1
    return result if isinstance(result, int) else 0


def _describe(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    if isinstance(e, KeyError) and e.args:
        text = str(e.args[0])
    return text.splitlines()[0] if len(text.splitlines()) == 1 else text


__all__ = ["app", "main"]
