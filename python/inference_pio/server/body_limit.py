"""A request-size limit as ASGI middleware: a body over ``max_bytes`` gets a 413 as early as it can.

A ``Content-Length`` over the limit is refused before one byte of the body is read. A body without one
(chunked) is counted as it arrives and refused at the first byte past the limit, so the server never
buffers or parses more than ``max_bytes`` of any request.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response

DEFAULT_MAX_REQUEST_BYTES = 8 * 2**20


def _too_large(max_bytes: int) -> str:
    return f"the request body is larger than this server accepts ({max_bytes} bytes; see pio serve --max-request-bytes)"


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = False  # the HTTP server refuses a malformed length itself
            if too_big:
                return await error_response(413, _too_large(self.max_bytes), code="request_too_large")(scope, receive, send)
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # raised into the body read: the app answers it as a 413
                    raise HTTPException(413, _too_large(self.max_bytes))
            return message

        await self.app(scope, counting_receive, send)
