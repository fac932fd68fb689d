"""What a schematic generator may be asked for, as one JSON schema plus a validator of the final object.

Accepted ``schema`` arguments:

- a pydantic model class -> content is an instance of it;
- ``dict`` / ``typing.Dict`` / ``Dict[str, Any]`` (the seed's free JSON) -> content is a dict;
- any other type pydantic understands (``list[int]``, a ``TypedDict``, a dataclass, ``Literal[...]``);
- a JSON schema given as a dict -> content is the parsed JSON, checked with ``jsonschema`` when it is
  installed (pydantic cannot validate against an arbitrary JSON schema).

The engine's grammar (``engine.grammar``) compiles ``json_schema``; the services and the server hand
it any of the above. The grammar makes the output parse; validation runs anyway, because the grammar compiler ignores
some keywords (formats, ``multipleOf``...), and a remote service may ignore ``response_format``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from ..errors import OutputValidationError, SchemaError


@dataclass(frozen=True)
class OutputSchema:
    """``name``: for GenerationInfo; ``json_schema``: what the grammar enforces; ``parse(text) -> content``."""

    name: str
    json_schema: dict
    _validate: Callable[[str], Any]

    def parse(self, text: str) -> Any:
        try:
            return self._validate(text)
        except (ValueError, pydantic.ValidationError) as e:  # json and pydantic errors
            raise OutputValidationError(f"output does not match schema {self.name!r}: {e}; "
                                        f"output was {text[:400]!r}") from e

    @property
    def key(self) -> str:
        """Compact text of the JSON schema: what the grammar compiles and the cache key (property order matters)."""
        return json.dumps(self.json_schema, separators=(",", ":"))

    @property
    def instruction(self) -> str:
        """What a prompt says so that a model (constrained or not) knows the shape of the answer."""
        return f"Reply with JSON only, matching this JSON schema:\n{self.key}"

    @classmethod
    def of(cls, schema: Any) -> "OutputSchema":
        if isinstance(schema, OutputSchema):
            return schema
        if isinstance(schema, Mapping):
            return _from_json_schema(dict(schema))
        if isinstance(schema, type) and issubclass(schema, pydantic.BaseModel):
            return cls(schema.__name__, schema.model_json_schema(), schema.model_validate_json)
        try:
            adapter = pydantic.TypeAdapter(schema)
            json_schema = adapter.json_schema()
        except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError) as e:
            raise SchemaError(
                f"cannot generate {schema!r}: give a pydantic model class, dict (free JSON), a type pydantic "
                f"understands, or a JSON schema dict ({e})"
            ) from None
        name = getattr(schema, "__name__", None) or str(schema)
        return cls(name, json_schema, adapter.validate_json)


def _from_json_schema(schema: dict) -> OutputSchema:
    try:
        json.dumps(schema)
    except (TypeError, ValueError) as e:
        raise SchemaError(f"the JSON schema is not JSON-serializable: {e}") from None
    try:
        import jsonschema
    except ImportError:
        jsonschema = None
    if jsonschema is not None:
        validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            validator_class.check_schema(schema)
        except jsonschema.SchemaError as e:
            where = "/".join(map(str, e.path)) or "top"
            raise SchemaError(f"not a valid JSON schema: {e.message} (at {where})") from None
        validator = validator_class(schema)

        def validate(text: str) -> Any:
            value = json.loads(text)
            error = jsonschema.exceptions.best_match(validator.iter_errors(value))
            if error is not None:
                raise ValueError(f"{error.message} (at {'/'.join(map(str, error.path)) or 'top'})")
            return value
    else:
        validate = json.loads
    return OutputSchema(str(schema.get("title") or "json_schema"), schema, validate)


__all__ = ["OutputSchema", "OutputValidationError", "SchemaError"]
