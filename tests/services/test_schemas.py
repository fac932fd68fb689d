"""Schema arguments -> one JSON schema + a validator; bad schemas and bad output give clear errors."""

from __future__ import annotations

from typing import Any, Dict, Literal

import pydantic
import pytest

from inference_pio.services.schemas import OutputSchema, OutputValidationError, SchemaError


class City(pydantic.BaseModel):
    name: str
    population: int
    kind: Literal["capital", "town"]


@pytest.mark.parametrize("schema", [Dict, dict, Dict[str, Any]])
def test_free_json_is_any_object(schema):
    out = OutputSchema.of(schema)
    assert out.json_schema["type"] == "object"
    assert out.parse('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    with pytest.raises(OutputValidationError, match="does not match"):
        out.parse("[1, 2]")


def test_pydantic_model_gives_an_instance_and_validates():
    out = OutputSchema.of(City)
    assert out.name == "City" and out.json_schema["required"] == ["name", "population", "kind"]
    city = out.parse('{"name": "Paris", "population": 2100000, "kind": "capital"}')
    assert isinstance(city, City) and city.population == 2100000
    with pytest.raises(OutputValidationError, match="kind"):
        out.parse('{"name": "Paris", "population": 2, "kind": "village"}')
    with pytest.raises(OutputValidationError):
        out.parse('{"name": "Paris", "population": 2')  # truncated JSON


def test_json_schema_dict_is_checked_with_jsonschema():
    pytest.importorskip("jsonschema")
    out = OutputSchema.of({"title": "Pair", "type": "array", "items": {"type": "integer"}, "minItems": 2})
    assert out.name == "Pair" and out.parse("[1, 2]") == [1, 2]
    with pytest.raises(OutputValidationError, match="too short|minItems|should be non-empty"):
        out.parse("[1]")


@pytest.mark.parametrize("bad", [
    {"type": "object", "properties": {"a": {"type": "no-such-type"}}},
    {"type": 5},
    {"type": "array", "minItems": "two"},
])
def test_invalid_json_schema_is_a_schema_error(bad):
    pytest.importorskip("jsonschema")
    with pytest.raises(SchemaError, match="not a valid JSON schema"):
        OutputSchema.of(bad)


def test_not_a_schema_at_all():
    with pytest.raises(SchemaError, match="cannot generate"):
        OutputSchema.of(object())
