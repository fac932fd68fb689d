"""The FastAPI application: routes, API-key check, metrics, and the served models' lifetimes."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from fastapi.responses import Response

from . import chat, completions, embeddings
from .access import AccessControl
from .body_limit import DEFAULT_MAX_REQUEST_BYTES, BodyLimit
from .errors import install_error_handlers
from .metrics import CONTENT_TYPE, ServerMetrics
from .state import ServerState


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
    # Added first, so innermost: a refused key never has its body read.
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    app.add_middleware(AccessControl, metrics=metrics, api_key=state.api_key)

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
