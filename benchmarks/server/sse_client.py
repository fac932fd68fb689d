"""A minimal streaming HTTP/1.1 client for benchmarks: one POST, its server-sent events timed as they arrive.

httpx costs the client tens of microseconds per chunk; on a small machine the client shares the cores with
the server it measures, so this one reads the raw socket, decodes the chunked body itself and parses JSON
only where it must: until the first event that carries text (time to first token) and the event holding
``usage`` (the token counts). Everything between is only split into lines.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass


class StreamError(RuntimeError):
    """The server answered with an error status, an ``{"error": ...}`` event, or a broken stream."""


@dataclass
class StreamTiming:
    first_text_s: float | None  # seconds from sending to the first event with text (None: no text came)
    total_s: float
    prompt_tokens: int
    completion_tokens: int
    events: int  # data events before [DONE] (role, text, finish and usage events)


def _has_text(event: dict) -> bool:
    for choice in event.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or choice.get("text"):
            return True
    return False


async def _read_chunked(reader: asyncio.StreamReader):
    """Yields the pieces of a ``Transfer-Encoding: chunked`` body until its last chunk."""
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            await reader.readline()
            return
        yield await reader.readexactly(size)
        await reader.readexactly(2)


async def stream_post(host: str, port: int, path: str, body: dict, headers: dict[str, str] | None = None) -> StreamTiming:
    """POSTs ``body`` as JSON to ``path`` and reads its event stream to ``data: [DONE]``."""
    payload = json.dumps(body).encode()
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
            f"Content-Length: {len(payload)}", "Connection: close", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        status = (await reader.readline()).split(b" ", 2)
        if len(status) < 2 or status[1] != b"200":
            raise StreamError(f"HTTP {b' '.join(status[1:]).decode(errors='replace').strip()}")
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            chunked |= name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower()
        pieces = _read_chunked(reader) if chunked else _read_to_end(reader)
        return await _events(pieces, start)
    finally:
        writer.close()


async def _read_to_end(reader: asyncio.StreamReader):
    while piece := await reader.read(65536):
        yield piece


async def _events(pieces, start: float) -> StreamTiming:
    first = None
    usage = None
    done = False
    events = 0
    pending = b""
    async for piece in pieces:
        pending += piece
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not line.startswith(b"data: "):
                continue
            data = line[6:]
            if data == b"[DONE]":
                done = True
                continue
            events += 1
            if first is None or b'"usage"' in data or b'"error"' in data:
                event = json.loads(data)
                if "error" in event:
                    raise StreamError(f"error event: {event['error']}")
                if first is None and _has_text(event):
                    first = time.perf_counter() - start
                usage = event.get("usage") or usage
    if not done:
        raise StreamError("the stream ended without data: [DONE]")
    if usage is None:
        raise StreamError("no usage event (send stream_options.include_usage)")
    return StreamTiming(first, time.perf_counter() - start, usage["prompt_tokens"], usage["completion_tokens"],
                        events)
