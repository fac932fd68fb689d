"""server.structured.processors_for: response_format -> fresh grammar processors per choice, or a 400."""

from __future__ import annotations

import json

import pytest

from inference_pio.server.errors import APIError
from inference_pio.server.schemas import ResponseFormat
from inference_pio.server.structured import processors_for


def test_text_and_none_add_nothing(model):
    assert processors_for(model, None)() == ()
    assert processors_for(model, ResponseFormat(type="text"))() == ()


@pytest.mark.parametrize("fmt", [
    {"type": "json_object"},
    {"type": "json_schema", "json_schema": {"name": "p", "schema": {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": False}}},
])
def test_each_choice_gets_its_own_processor(model, fmt):
    factory = processors_for(model, ResponseFormat.model_validate(fmt))
    first, second = factory(), factory()
    assert len(first) == 1 and first[0] is not second[0]
    prompt = model.tokenize("json please")
    for seed, processors in enumerate((first, second)):
        [result] = model.generate(prompt, max_tokens=200, temperature=0.8, seed=seed, logits_processors=processors)
        assert result.text.startswith("{")
        if fmt["type"] == "json_schema":  # short enough to finish; free JSON may run out of tokens (as OpenAI's)
            assert result.finish_reason == "stop"
            value = json.loads(result.text)
            assert set(value) == {"n"} and isinstance(value["n"], int)
        elif result.finish_reason == "stop":
            assert isinstance(json.loads(result.text), dict)


def test_schema_the_grammar_rejects_is_a_400(model):
    fmt = ResponseFormat.model_validate({"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "no-such-type"}}}}})
    with pytest.raises(APIError) as e:
        processors_for(model, fmt)
    assert e.value.status == 400 and e.value.param == "response_format" and "schema" in e.value.message
