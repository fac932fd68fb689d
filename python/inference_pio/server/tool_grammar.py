"""The grammar of a request's tool calls: an xgrammar structural tag per ``tool_choice``.

- a named function: the whole answer is one call of it;
- ``required``: the answer is one call (or, with ``parallel_tool_calls``, several separated by
  spaces) of the listed functions, nothing else;
- ``auto``: free text, but once the text reaches the format's trigger (``<tool_call>``, or
  ``{"name": `` for Llama) the call is constrained from there to its end.

Each call's arguments follow the function's JSON schema, with at most one whitespace character in a
row (free whitespace would let a weak model spend its budget on spaces), so they always parse and
validate.
"""

from __future__ import annotations

from .tool_calls import ToolFormat

_NO_ARGUMENTS = {"type": "object", "properties": {}}


def _tag(fmt: ToolFormat, function) -> dict:
    schema = function.parameters if function.parameters is not None else _NO_ARGUMENTS
    return {"type": "tag", "begin": fmt.begin(function.name),
            "content": {"type": "json_schema", "json_schema": schema, "max_whitespace_cnt": 1},
            "end": fmt.end}


def structural_tag(fmt: ToolFormat, functions: list, choice: str, parallel: bool) -> dict:
    """``choice``: "auto", "required", or "function" (``functions`` then holds only the named one)."""
    tags = [_tag(fmt, f) for f in functions]
    if choice == "function":
        body = tags[0]
    elif choice == "required":
        body = {"type": "tags_with_separator", "tags": tags, "separator": " ", "at_least_one": True,
                "stop_after_first": not parallel}
    else:
        body = {"type": "triggered_tags", "triggers": [fmt.trigger], "tags": tags, "stop_after_first": not parallel}
    return {"type": "structural_tag", "format": body}
