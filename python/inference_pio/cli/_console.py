"""Shared console objects and CLI state (stdout carries generated text only; the rest goes to stderr)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


@dataclass
class _State:
    debug: bool = False


state = _State()
