"""``pio models list | show | pull | import | rm`` over the local model catalogue.

Transfers and digest checks show progress bars on stderr (``INFERENCE_PIO_PROGRESS=0`` hides them).
"""

from __future__ import annotations

import asyncio

import typer
from rich.table import Column, Table

from ._console import console

app = typer.Typer(help="Local models: the catalogue of the model manager.", no_args_is_help=True)


def _manager():
    from ..models import LocalModelManager

    manager = LocalModelManager()
    asyncio.run(manager.initialize())
    return manager


def _size(n: int | None) -> str:
    if not n:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _params(n: int | None) -> str:
    if not n:
        return "-"
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.2f}{unit}" if unit == "B" else f"{n / scale:.0f}{unit}"
    return str(n)


@app.command("list", help="List catalogued models (optionally one family).")
def list_models(
    family: str = typer.Option(None, "--family", help="An installed plugin family (pio plugins list) or custom."),
) -> int:
    manager = _manager()
    models = manager.list_models(family)
    table = Table("format", "weights", "size", "params", "source")
    table.columns.insert(0, Column("id", no_wrap=True))  # ids are typed back in: never wrapped
    for m in models:
        table.add_row(m.id, m.format.value, m.quantization or m.dtype or "-", _size(m.size_bytes),
                      _params(m.parameter_count), m.source.value)
    console.print(table)
    if not models:
        console.print("[dim]no models yet: `pio models import PATH` or `pio models pull NAME`[/]")
    return 0


@app.command(help="Show everything the catalogue knows about MODEL_ID.")
def show(model_id: str) -> int:
    from ._models import catalogued_model

    info = catalogued_model(model_id)
    table = Table(show_header=False)
    for field in ("id", "name", "family", "source", "format", "path", "size_bytes", "parameter_count", "dtype",
                  "quantization", "capabilities", "plugin", "owned", "origin"):
        value = getattr(info, field, None)
        value = getattr(value, "value", value)
        table.add_row(field, ", ".join(value) if isinstance(value, tuple) else str(value))
    console.print(table)
    return 0


@app.command(help="Download NAME from a source: a Hugging Face repo id (org/name), an Ollama name "
                  "(model[:tag], from the local Ollama store or the registry), or a .gguf URL.")
def pull(
    name: str,
    source: str = typer.Option("huggingface", "--source", help="huggingface, ollama, gguf or custom"),
    family: str = typer.Option(None, "--family", help="Model family when it cannot be told from the files."),
    as_name: str = typer.Option(None, "--name", help="Catalogue name (default: from NAME)."),
    revision: str = typer.Option(None, "--revision", help="Hugging Face branch, tag or commit."),
    sha256: str = typer.Option(None, "--sha256", help="Expected sha256 of a .gguf URL download."),
) -> int:
    manager = _manager()
    info = asyncio.run(manager.download_model(name, family, source, name=as_name, revision=revision, sha256=sha256))
    console.print(f"pulled [bold]{info.id}[/] ({_size(info.size_bytes)})")
    return 0


@app.command("import", help="Add a local checkpoint folder or .gguf file to the catalogue (referenced in place, "
                             "never copied or deleted).")
def import_model(
    path: str,
    name: str = typer.Option(None, "--name", help="Catalogue name (default: from the path)."),
    family: str = typer.Option(None, "--family", help="Model family when it cannot be told from the files."),
    plugin: str = typer.Option(None, "--plugin", help="Plugin serving a custom checkpoint folder."),
) -> int:
    manager = _manager()
    info = asyncio.run(manager.import_path(path, family, name, plugin=plugin))
    console.print(f"imported [bold]{info.id}[/] ({_size(info.size_bytes)})")
    return 0


@app.command("rm", help="Remove MODEL_ID from the catalogue (and the files the catalogue owns).")
def remove(model_id: str, yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")) -> int:
    manager = _manager()
    info = manager.get_model(model_id)
    if not yes and not typer.confirm(f"remove {info.id}?"):
        raise typer.Abort()
    asyncio.run(manager.remove_model(info.id))
    console.print(f"removed {info.id}")
    return 0
