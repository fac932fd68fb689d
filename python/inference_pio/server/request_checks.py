"""Checks of a raw JSON request body before pydantic, tokenizers or grammar compilers see it.

Two things those libraries handle badly: text that is not valid Unicode (a lone UTF-16 surrogate such
as ``"\\ud800"``, which JSON allows and UTF-8 cannot encode) and nesting deep enough to exhaust the
recursion of a JSON-schema compiler. Both become a 400 naming the field.
"""

from __future__ import annotations

import re

# Deeper than any real request (a JSON schema nested 30 objects deep is ~65 levels); shallow enough
# for the recursive schema compilers (xgrammar, jsonschema) behind response_format.
MAX_DEPTH = 96

_SURROGATE = re.compile("[\ud800-\udfff]")


class FieldError(ValueError):
    """A bad field of the body: ``param`` is its path (``messages.0.content``)."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param, self.message = param, message


def _path(parts: list) -> str:
    return ".".join(str(p) for p in parts) or "body"


def check_json(data: object) -> None:
    """Raises FieldError for the first lone surrogate (in a key or a string) or nesting past MAX_DEPTH."""
    stack: list[tuple[object, list]] = [(data, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                raise FieldError(_path(path), "the text contains a lone UTF-16 surrogate, which is not valid "
                                              "Unicode (send the character itself or a surrogate pair)")
            continue
        if isinstance(value, dict):
            items = value.items()
        elif isinstance(value, list):
            if value and all(type(v) is int for v in value):  # token ids: nothing below them to check
                continue
            items = enumerate(value)
        else:
            continue
        if len(path) >= MAX_DEPTH:
            raise FieldError(_path(path[:1]), f"the JSON nests deeper than {MAX_DEPTH} levels")
        for key, child in items:
            if isinstance(key, str) and _SURROGATE.search(key):
                raise FieldError(_path(path + [key.encode("utf-8", "backslashreplace").decode()]),
                                 "the key contains a lone UTF-16 surrogate, which is not valid Unicode")
            stack.append((child, path + [key]))
