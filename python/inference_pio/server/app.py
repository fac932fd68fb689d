"""The FastAPI application: routes, API-key check, metrics, and the served models' lifetimes."""

from __future__ import annotations

import asyncio
import hmac
import time

from fastapi import FastAPI, Request
from fastapi.responses import Response

from . import chat, completions, embeddings
from .body_limit import DEFAULT_MAX_REQUEST_BYTES, BodyLimit
from .errors import error_response, install_error_handlers
from .metrics import CONTENT_TYPE, ServerMetrics
from .state import ServerState

_OPEN_PATHS = ("/health", "/metrics", "/docs", "/openapi.json")


def create_app(state: ServerState, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> FastAPI:
    """An app over ``state``; the models' engines are shut down when the app stops. A request body over
    ``max_request_bytes`` is refused with a 413."""
    engine = state.generator.engine if state.generator is not None else None
    metrics = ServerMetrics(engine.stats if engine is not None else None)

    async def lifespan(app: FastAPI):
        yield
        for served in state.served():
            await asyncio.to_thread(served.model.close)

    app = FastAPI(title="inference-pio", version="1", lifespan=lifespan)
    app.state.pio = state
    app.state.metrics = metrics
    app.state.embed_lock = asyncio.Lock()
    install_error_handlers(app)
    # Inside the middleware below (added later, so outside it), whose task group would wrap the 413 that
    # BodyLimit raises into the body read as an ExceptionGroup (FastAPI then answers a 400).
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)

    @app.middleware("http")
    async def _auth_and_metrics(request: Request, call_next):
        path = request.url.path
        start = time.perf_counter()
        if state.api_key and not path.startswith(_OPEN_PATHS):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {state.api_key}".encode()):
                response = error_response(401, "invalid or missing API key (send Authorization: Bearer <key>)",
                                          code="invalid_api_key")
                metrics.requests.labels(path, "401").inc()
                return response
        response = await call_next(request)
        if path.startswith("/v1/"):
            metrics.requests.labels(path, str(response.status_code)).inc()
            metrics.latency.labels(path).observe(time.perf_counter() - start)
        return response

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": [m.name for m in state.served()]}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": m.name, "object": "model", "created": m.created,
                                            "owned_by": "inference-pio"} for m in state.served()]}

    for module in (completions, chat, embeddings):
        app.include_router(module.router)
    return app
