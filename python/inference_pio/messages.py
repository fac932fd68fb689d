"""Quoting values from files in error messages: a hostile file's 40 MB string must not become a 40 MB message."""

from __future__ import annotations

from typing import Any

MAX_QUOTED = 80


def shorten(value: Any, limit: int = MAX_QUOTED) -> str:
    """``repr(value)`` on one line, cut to about ``limit`` characters with the cut said (``...[+N chars]``)."""
    if isinstance(value, (list, tuple, dict)) and len(value) > limit:  # never repr a huge container whole
        text = f"<{type(value).__name__} of {len(value)} items>"
    else:
        text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[+{len(text) - limit} chars]"
