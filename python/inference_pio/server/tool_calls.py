"""Tool calls in a model's output: the two call formats, and a parser that works on growing text.

A format says how a call looks in the text the model writes:

- ``HERMES``: ``<tool_call>{"name": "f", "arguments": {...}}</tool_call>`` (Hermes, Qwen2.5, and
  our generic format for templates that cannot render tools);
- ``LLAMA``: ``{"name": "f", "parameters": {...}}`` (Llama 3.1 / 3.2 JSON tool calling).

:func:`parse` splits text into content and calls; on unfinished text (``final=False``) it holds back
what may still become a call, so that parsing a prefix of the text never reports content or argument
text that parsing a longer prefix takes back. Streaming diffs successive parses (:class:`ToolCallStream`),
so streamed deltas join to exactly the non-streaming answer.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field

_NAME = r'"((?:[^"\\]|\\.)*)"'


@dataclass(frozen=True)
class ToolFormat:
    name: str
    opening: str  # text before a call's JSON object ("" when the object itself starts the call)
    arguments_key: str
    closing: str  # text after the call's JSON object

    @property
    def trigger(self) -> str:
        """Text that starts every call (where the grammar's constraint on a call begins)."""
        return self.opening or '{"name": '

    def begin(self, function: str) -> str:
        """Exact call text up to the arguments object, as the grammar writes it."""
        return f'{self.opening}{{"name": "{function}", "{self.arguments_key}": '

    @property
    def end(self) -> str:
        """Exact call text after the arguments object, as the grammar writes it. (No newlines: the grammar
        backend leaves control bytes out of its vocabulary.)"""
        return "}" + self.closing

    @property
    def header(self) -> re.Pattern:
        """From the trigger to the arguments' first character: group 1 is the (JSON-escaped) name."""
        return re.compile(re.escape(self.opening) + r'\s*\{\s*"name"\s*:\s*' + _NAME + r'\s*,\s*"'
                          + re.escape(self.arguments_key) + r'"\s*:\s*')

    @property
    def footer(self) -> re.Pattern:
        return re.compile(r"\s*\}" + (r"\s*" + re.escape(self.closing) if self.closing else ""))


HERMES = ToolFormat("hermes", "<tool_call>", "arguments", "</tool_call>")
LLAMA = ToolFormat("llama", "", "parameters", "")


@dataclass
class ParsedCall:
    name: str
    arguments: str  # JSON text of the arguments object (as written; partial while streaming)
    complete: bool


@dataclass
class Parsed:
    content: str
    calls: list[ParsedCall] = field(default_factory=list)


def _json_value_end(text: str, start: int) -> int | None:
    """Index just past the JSON object or array starting at ``text[start]``; None if it is not closed yet."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return None


def _held_back(text: str, trigger: str) -> int:
    """Length of the longest end of ``text`` that is a proper start of ``trigger`` (it may become a call)."""
    for n in range(min(len(trigger) - 1, len(text)), 0, -1):
        if trigger.startswith(text[-n:]):
            return n
    return 0


def parse(text: str, fmt: ToolFormat, final: bool = True) -> Parsed:
    """Content (the text outside calls) and calls of ``text``. A call whose opening does not match the
    format stays content; one cut short (out of tokens) is reported with ``complete=False``."""
    out = Parsed("")
    pos = 0
    while True:
        start = text.find(fmt.trigger, pos)
        if start < 0:
            rest = text[pos:]
            out.content += rest if final else rest[:len(rest) - _held_back(rest, fmt.trigger)]
            return out
        out.content += text[pos:start]
        header = fmt.header.match(text, start)
        if header is None or text[header.end():header.end() + 1] not in ("{", ""):
            if not final and header is None and _could_grow_into_header(text, start, fmt):
                return out  # the call's opening is still arriving
            out.content += text[start:start + len(fmt.trigger)]  # not a call: keep it as text
            pos = start + len(fmt.trigger)
            continue
        name = json.loads(f'"{header.group(1)}"')
        args_start = header.end()
        args_end = _json_value_end(text, args_start)
        if args_end is None:
            out.calls.append(ParsedCall(name, text[args_start:], False))
            return out
        out.calls.append(ParsedCall(name, text[args_start:args_end], True))
        footer = fmt.footer.match(text, args_end)
        if footer is None:
            if not final:
                return out  # the closing text is still arriving
            pos = args_end
        else:
            pos = footer.end()


def _could_grow_into_header(text: str, start: int, fmt: ToolFormat) -> bool:
    """True when ``text[start:]`` is still short of a full header: more text may complete it."""
    tail = text[start:]
    # A header is at most a few hundred characters (a 64-character name, whitespace); past that it never will.
    return len(tail) < 256 and "\n\n" not in tail[len(fmt.trigger) + 1:]


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


def call_objects(calls: list[ParsedCall]) -> list[dict]:
    """The OpenAI ``message.tool_calls`` (a call cut short by ``max_tokens`` keeps its partial arguments)."""
    return [{"id": new_call_id(), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls]


class ToolCallStream:
    """Turns growing text into OpenAI chat deltas: ``content`` pieces and ``tool_calls`` fragments (first the
    call's index, id, type and name with empty arguments, then pieces of its arguments)."""

    def __init__(self, fmt: ToolFormat):
        self.fmt = fmt
        self.text = ""
        self._content = 0
        self._calls: list[tuple[str, int]] = []  # per call: its id and how much of its arguments went out

    @property
    def called(self) -> bool:
        return bool(self._calls)

    def feed(self, piece: str, final: bool = False) -> dict:
        """The delta (possibly empty) that ``piece`` adds; ``final`` on the choice's last piece."""
        self.text += piece
        parsed = parse(self.text, self.fmt, final)
        delta: dict = {}
        if len(parsed.content) > self._content:
            delta["content"] = parsed.content[self._content:]
            self._content = len(parsed.content)
        fragments = []
        for index, call in enumerate(parsed.calls):
            if index == len(self._calls):
                self._calls.append((new_call_id(), 0))
                fragments.append({"index": index, "id": self._calls[index][0], "type": "function",
                                  "function": {"name": call.name, "arguments": ""}})
            call_id, sent = self._calls[index]
            if len(call.arguments) > sent:
                fragments.append({"index": index, "function": {"arguments": call.arguments[sent:]}})
                self._calls[index] = (call_id, len(call.arguments))
        if fragments:
            delta["tool_calls"] = fragments
        return delta
