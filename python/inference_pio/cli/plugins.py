"""``pio plugins list | show NAME``: the model plugins this installation discovered."""

from __future__ import annotations

import typer
from rich.table import Table

from ._console import console, err_console

app = typer.Typer(help="Model plugins (built-in, installed, or from INFERENCE_PIO_PLUGIN_PATH).",
                  no_args_is_help=True)


@app.command("list", help="List the discovered plugins, and any broken ones with the reason.")
def list_plugins() -> int:
    from ..plugin import PluginManager

    manager = PluginManager()
    table = Table("name", "version", "family", "model types", "capabilities", "source")
    for info in manager.list_plugins():
        m = info.manifest
        table.add_row(m.name, m.version, m.model_family, ", ".join(m.model_types), ", ".join(m.capabilities),
                      info.source)
    console.print(table)
    for broken in manager.broken_plugins():
        err_console.print(f"[yellow]broken plugin[/] {broken}", highlight=False)
    return 0


@app.command(help="Show one plugin's manifest.")
def show(name: str) -> int:
    from ..plugin import PluginManager

    info = PluginManager().plugin_info(name)
    console.print_json(info.manifest.model_dump_json(by_alias=True))
    console.print(f"[dim]folder: {info.path}  (source: {info.source})[/]", highlight=False)
    return 0
