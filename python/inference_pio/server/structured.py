"""``response_format`` -> per-choice logits processors (grammar-constrained JSON), via the services layer."""

from __future__ import annotations

from collections.abc import Callable

from .errors import APIError


def processors_for(model, response_format) -> Callable[[], tuple]:
    """A factory of fresh processors for each choice (a grammar matcher holds per-request state)."""
    if response_format is None or response_format.type == "text":
        return tuple
    raise APIError(400, f"response_format {response_format.type!r} is not supported yet", param="response_format")
