"""``response_format`` -> per-choice logits processors (grammar-constrained JSON), via the services layer.

``json_schema`` constrains each choice to the given schema, ``json_object`` to any JSON object. The
grammar ends the choice (EOS) once the JSON is complete; a choice that runs out of ``max_tokens`` first
stops with ``finish_reason: "length"`` and truncated JSON, as OpenAI's API does.
"""

from __future__ import annotations

from collections.abc import Callable

from ..engine.output_schema import SchemaError
from ..engine.grammar import GrammarBackend, GrammarLogitsProcessor
from .errors import APIError

_ANY_OBJECT = {"type": "object"}


def constrains(response_format) -> bool:
    """Whether ``response_format`` asks for a grammar (else :func:`processors_for` returns no processors)."""
    return response_format is not None and response_format.type != "text"


def processors_for(model, response_format) -> Callable[[], tuple]:
    """A factory of fresh processors for each choice (a grammar matcher holds per-request state)."""
    if not constrains(response_format):
        return tuple
    schema = _ANY_OBJECT if response_format.type == "json_object" else response_format.json_schema.schema_
    try:
        backend = GrammarBackend.for_model(model)
        compiled = backend.compile(schema)
    except SchemaError as e:
        raise APIError(400, f"response_format.json_schema.schema: {e}", param="response_format") from e
    except ValueError as e:  # a tokenizer without EOS, a model without tokenizer
        raise APIError(400, f"response_format: {e}", param="response_format") from e
    return lambda: (GrammarLogitsProcessor(compiled, backend),)
