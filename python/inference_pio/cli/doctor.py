"""``pio doctor``: what this installation can run."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command(help="Print the version and which backends this installation can run.")
    def doctor() -> int:
        from ..doctor import main

        return main()
