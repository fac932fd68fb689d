"""OpenAI-compatible HTTP server (FastAPI + uvicorn) over the async engine: ``pio serve``."""

from .app import create_app
from .state import ServedModel, ServerState

__all__ = ["ServedModel", "ServerState", "create_app"]
