"""One HTTP request through an ASGI app in-process, its response coming back as a stream of parts.

A replica hosts the same FastAPI app as ``pio serve`` and the ingress hands it each request this way,
so routes, errors, auth and streaming are those of ``pio serve`` by construction. Closing the stream
early tells the app the client went away (``http.disconnect``), which aborts the engine's work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

log = logging.getLogger(__name__)

_END = object()


async def call_asgi(app, method: str, path: str, query: bytes = b"", headers: list[tuple[str, str]] = (),
                    body: bytes = b"", drain_timeout: float = 10.0) -> AsyncIterator[dict | bytes]:
    """Yields ``{"status", "headers"}`` once, then the body's chunks (bytes)."""
    sent = asyncio.Queue()
    client_gone = asyncio.Event()
    body_given = False

    async def receive():
        nonlocal body_given
        if not body_given:
            body_given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await client_gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        await sent.put(message)

    async def run():
        try:
            await app(_scope(method, path, query, headers), receive, send)
        finally:
            await sent.put(_END)

    task = asyncio.create_task(run())
    started = False
    try:
        while (message := await sent.get()) is not _END:
            if message["type"] == "http.response.start":
                started = True
                yield {"status": message["status"],
                       "headers": [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())]}
            elif message["type"] == "http.response.body":
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body", False):
                    break
        if not started:
            await task  # the app failed before answering: its exception is the caller's error
            raise RuntimeError(f"{method} {path}: the app ended without a response")
    finally:
        client_gone.set()
        done, _ = await asyncio.wait({task}, timeout=drain_timeout)
        if not done:
            task.cancel()
        elif not task.cancelled() and task.exception() is not None and started:
            log.warning("%s %s failed after answering: %r", method, path, task.exception())


def _scope(method: str, path: str, query: bytes, headers) -> dict:
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": query, "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 80), "state": {},
    }
