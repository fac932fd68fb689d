"""Server-sent events in OpenAI's framing: ``data: {json}`` blocks, then ``data: [DONE]``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import anyio
from fastapi.responses import StreamingResponse


def event(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


def sse_response(chunks: AsyncIterator[str], on_cancel: Callable[[], None] | None = None) -> StreamingResponse:
    """Streams ``chunks``; when the client goes away the stream is closed (cancelling the request)
    and ``on_cancel`` is called."""
    async def body():
        finished = False
        try:
            async for chunk in chunks:
                yield chunk
            yield "data: [DONE]\n\n"
            finished = True
        finally:
            if not finished and on_cancel is not None:
                on_cancel()
            # The response task is being cancelled (anyio re-raises at every await there): shield the
            # close, which aborts the request in the engine and frees its KV blocks.
            with anyio.CancelScope(shield=True):
                await chunks.aclose()

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
