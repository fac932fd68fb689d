"""Server-sent events in OpenAI's framing: ``data: {json}`` blocks, then ``data: [DONE]``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable

import anyio
from fastapi.responses import StreamingResponse

from .errors import error_body

log = logging.getLogger("inference_pio.server")


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def event(payload: dict) -> str:
    return f"data: {_json(payload)}\n\n"


class ChunkEvents:
    """The events of one streamed response, whose fields before ``choices`` (id, object, created, model)
    never change: those are encoded once, and each event encodes only its choices (and ``extra`` fields
    such as ``usage``, which follow them). ``chunks(choices)`` equals ``event({**head, "choices": choices})``."""

    def __init__(self, head: dict):
        if not head or "choices" in head:
            raise ValueError(f"head must hold the fields before choices, got {head!r}")
        self._prefix = f"data: {_json(head)[:-1]},\"choices\":"

    def __call__(self, choices: list, extra: dict | None = None) -> str:
        tail = f",{_json(extra)[1:-1]}" if extra else ""
        return f"{self._prefix}{_json(choices)}{tail}}}\n\n"


class _ClosingStreamingResponse(StreamingResponse):
    """Closes its body iterator however the response ends. Starlette leaves it suspended when a
    send fails on a disconnected client (ASGI 2.4), and only garbage collection would close it."""

    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()


def sse_response(chunks: AsyncIterator[str], on_cancel: Callable[[], None] | None = None) -> StreamingResponse:
    """Streams ``chunks``; when the client goes away the stream is closed (cancelling the request)
    and ``on_cancel`` is called. A request that fails mid-stream sends an ``{"error": ...}`` event (as
    OpenAI's API does), then ends the stream as usual."""
    async def body():
        finished = False
        try:
            try:
                async for chunk in chunks:
                    yield chunk
            except Exception as e:  # noqa: BLE001 -- the headers are sent: the error goes in the stream
                log.error("a streamed request failed", exc_info=e)
                yield event(error_body(e))
            yield "data: [DONE]\n\n"
            finished = True
        finally:
            if not finished and on_cancel is not None:
                on_cancel()
            # The response task is being cancelled (anyio re-raises at every await there): shield the
            # close, which aborts the request in the engine and frees its KV blocks.
            with anyio.CancelScope(shield=True):
                await chunks.aclose()

    return _ClosingStreamingResponse(body(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
