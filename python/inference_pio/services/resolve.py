"""Model id -> the service that answers for it: ``local/<family>/<name>`` from the catalogue, anything else
(``openai/gpt-4o``, ``myserver/tiny``) through the OpenAI-compatible remote service."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .interface import NLPService


def is_local_id(model_id: str) -> bool:
    return model_id.startswith("local/")


def build_service(model_id: str, model_manager=None, logger: logging.Logger | None = None, *,
                  local_options: Mapping[str, Any] | None = None,
                  remote_options: Mapping[str, Any] | None = None) -> NLPService:
    """A new (not yet loaded) service for ``model_id``; UnknownModelError for a local id not in the catalogue."""
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(f"a model id is a non-empty string, got {model_id!r}")
    if is_local_id(model_id):
        if model_manager is None:
            raise ValueError(f"{model_id} is a local model id, and no model manager was given to look it up")
        from .local import local_service

        return local_service(model_manager, model_id, logger, **dict(local_options or {}))
    from .openai_remote import OpenAIRemoteService

    return OpenAIRemoteService(model_id, logger=logger, **dict(remote_options or {}))


__all__ = ["build_service", "is_local_id"]
