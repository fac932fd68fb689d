"""The API-key check and the per-request metrics, as plain ASGI middleware.

Plain ASGI, not ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` hands every chunk of a
streamed response through a memory channel to a task of its own (two task switches per server-sent event,
so per generated token), and hides the client's disconnect from ``request.is_disconnected()``. Here a
chunk costs one function call.
"""

from __future__ import annotations

import hmac
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_response
from .metrics import ServerMetrics

OPEN_PATHS = ("/health", "/metrics", "/docs", "/openapi.json")


class AccessControl:
    """Refuses requests without ``Authorization: Bearer <api_key>`` (when a key is set; :data:`OPEN_PATHS`
    are open) and counts ``/v1/`` requests by endpoint and status, with their latency: from the request's
    arrival to its last byte sent (a streamed response's whole stream)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, api_key: str | None):
        self.app, self.metrics = app, metrics
        self._expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        counted = path.startswith("/v1/")
        if self._expected is not None and not path.startswith(OPEN_PATHS):
            given = dict(scope.get("headers") or ()).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                if counted:
                    self.metrics.requests.labels(path, "401").inc()
                response = error_response(401, "invalid or missing API key (send Authorization: Bearer <key>)",
                                          code="invalid_api_key")
                return await response(scope, receive, send)
        if not counted:
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500  # unless the app starts a response: an exception it raised becomes a 500 further out

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)
