"""Grammar-constrained JSON from a random-weight model: always parses, always validates, ends on EOS."""

from __future__ import annotations

import json
from typing import Literal

import pydantic
import pytest

from inference_pio.services.schemas import OutputSchema, SchemaError
from inference_pio.services.structured import GrammarBackend, tokenizer_info

xgrammar = pytest.importorskip("xgrammar")


class Address(pydantic.BaseModel):
    street: str
    number: int = pydantic.Field(ge=1, le=9999)


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=20)
    role: Literal["admin", "user", "guest"]
    score: float
    tags: list[str] = pydantic.Field(max_length=3)
    address: Address
    active: bool
    manager: str | None


SCHEMAS = {
    "nested_pydantic": Person,
    "free_dict": dict,
    "enum_array": {"type": "object", "properties": {"colors": {"type": "array", "items": {"enum": ["red", "green"]},
                                                               "minItems": 1, "maxItems": 4}},
                   "required": ["colors"], "additionalProperties": False},
    "numbers": {"type": "object", "properties": {"i": {"type": "integer", "minimum": -5, "maximum": 500},
                                                 "x": {"type": "number"}, "big": {"type": "integer"}},
                "required": ["i", "x", "big"], "additionalProperties": False},
    "array_of_objects": {"type": "array", "minItems": 2,
                         "items": {"type": "object", "properties": {"k": {"type": "string"}, "v": {"type": "boolean"}},
                                   "required": ["k", "v"], "additionalProperties": False}},
    "deep_nesting": {"type": "object", "required": ["a"], "additionalProperties": False, "properties": {
        "a": {"type": "object", "required": ["b"], "additionalProperties": False, "properties": {
            "b": {"type": "object", "required": ["c", "d"], "additionalProperties": False, "properties": {
                "c": {"type": "array", "items": {"type": "string"}}, "d": {"type": "null"}}}}}}},
}


@pytest.fixture(scope="module")
def backend(model):
    return GrammarBackend.for_model(model)


@pytest.mark.parametrize("name", list(SCHEMAS))
@pytest.mark.parametrize("slack", [4, 120])
def test_output_always_parses_and_validates(model, backend, name, slack):
    """With a budget just above the shortest answer (the closing path forced almost at once) and a roomy one."""
    schema = OutputSchema.of(SCHEMAS[name])
    budget = backend.min_tokens(schema) + slack
    eos = set(model.plugin.tokenizer.eos_token_ids)
    prompts = [model.tokenize(f"Make a {name} number {seed}") for seed in range(4)]
    processors = [backend.processor(schema, max_tokens=budget) for _ in prompts]
    results = []
    for seed, (prompt, processor) in enumerate(zip(prompts, processors)):  # sampled at temperature 1: varied
        [result] = model.generate(prompt, max_tokens=budget, temperature=1.0, seed=seed, logits_processors=(processor,))
        results.append(result)
    for result in results:
        value = schema.parse(result.text)  # raises unless it parses and validates
        assert result.finish_reason == "stop", result.text
        assert result.token_ids[-1] in eos and len(result.token_ids) <= budget
        assert not eos & set(result.token_ids[:-1])
        if isinstance(value, pydantic.BaseModel):
            assert value.address.number >= 1 and len(value.tags) <= 3
    if slack > 20:  # with room the model chooses (tight budgets force the one closing path)
        assert len({r.text for r in results}) > 1, "sampling at temperature 1 should vary the output"


def test_greedy_decoding_still_finishes_within_the_budget(model, backend):
    schemas = [OutputSchema.of(SCHEMAS[n]) for n in ("numbers", "enum_array", "nested_pydantic")]
    prompt = model.tokenize("Answer")
    procs = [backend.processor(s, max_tokens=160) for s in schemas]
    # Greedy decoding of a random model loops (a string that never closes) unless the budget closes it.
    results = [model.generate(prompt, max_tokens=160, temperature=0, logits_processors=(p,))[0] for p in procs]
    for schema, result in zip(schemas, results):
        schema.parse(result.text)
        assert result.finish_reason == "stop"


def test_compiled_grammars_are_cached_per_schema(backend):
    first = backend.compile(SCHEMAS["numbers"])
    assert backend.compile(dict(SCHEMAS["numbers"])) is first
    assert backend.compile(SCHEMAS["enum_array"]) is not first


def test_schema_xgrammar_cannot_compile_is_a_schema_error(backend):
    with pytest.raises(SchemaError, match="cannot compile|not a valid"):
        backend.compile({"$ref": "#/definitions/missing"})


def test_grammar_vocabulary_matches_the_tokenizer(model):
    """Every plain token's bytes in xgrammar's view are what our tokenizer decodes; specials are blanked."""
    tokenizer = model.plugin.tokenizer
    info = tokenizer_info(tokenizer, model.vocab_size)
    decoded = info.decoded_vocab
    checked = 0
    for i in range(tokenizer.vocab_size):
        text = tokenizer.decode([i], skip_special_tokens=False)
        if tokenizer.decode([i], skip_special_tokens=True) == "" and text:  # special token
            assert i in info.special_token_ids or i in info.stop_token_ids
        elif "\ufffd" not in text and all(ord(c) >= 0x20 for c in text):
            assert decoded[i] == text.encode(), (i, decoded[i], text)
            checked += 1
    assert checked > 100
    assert set(range(tokenizer.vocab_size, model.vocab_size)) <= set(info.special_token_ids)


def test_json_object_output_is_a_real_json_object(model, backend):
    processor = backend.processor({"type": "object"}, max_tokens=48)
    [result] = model.generate(model.tokenize("x"), max_tokens=48, temperature=1.0, seed=3, logits_processors=(processor,))
    assert isinstance(json.loads(result.text), dict)


def test_min_tokens_is_the_shortest_answer(model, backend):
    """The forced closing path from the start writes exactly min_tokens tokens (EOS included)."""
    schema = OutputSchema.of(SCHEMAS["nested_pydantic"])
    need = backend.min_tokens(schema)
    processor = backend.processor(schema, max_tokens=need)
    [result] = model.generate(model.tokenize("x"), max_tokens=need, temperature=1.0, seed=0,
                              logits_processors=(processor,))
    assert len(result.token_ids) == need and result.finish_reason == "stop"
    schema.parse(result.text)


def test_strings_are_valid_utf8_so_max_length_holds(model, backend):
    """xgrammar admits UTF-8-encoded surrogates; masked, every string decodes cleanly and fits maxLength."""
    schema = OutputSchema.of({"type": "object", "properties": {"s": {"type": "string", "maxLength": 6}},
                              "required": ["s"], "additionalProperties": False})
    prompt = model.tokenize("s")
    for seed in range(24):
        processor = backend.processor(schema, max_tokens=40)
        [result] = model.generate(prompt, max_tokens=40, temperature=1.5, seed=seed, logits_processors=(processor,))
        assert "\ufffd" not in result.text, result.text
        assert len(schema.parse(result.text)["s"]) <= 6


def test_byte_fallback_vocabulary_llama2_style(tmp_path):
    """SentencePiece-style BPE ("▁" word marker, <0xNN> byte pieces): xgrammar's bytes for each token equal
    the text the tokenizer adds when decoding it after another token."""
    import json as _json

    from inference_pio.tokenizer import Tokenizer
    from tests.engine.tiny_tokenizers import sentencepiece_bpe

    sentencepiece_bpe(300).save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(_json.dumps({"eos_token": "</s>", "bos_token": "<s>",
                                                                 "unk_token": "<unk>"}))
    tokenizer = Tokenizer.from_pretrained(tmp_path)
    info = tokenizer_info(tokenizer, tokenizer.vocab_size + 8)
    assert info.vocab_type == xgrammar.VocabType.BYTE_FALLBACK and info.add_prefix_space
    assert list(info.stop_token_ids) == [tokenizer.eos_token_id]
    anchor = tokenizer.encode("x", add_special_tokens=False)
    base = tokenizer.decode(anchor)
    checked = 0
    for i in range(tokenizer.vocab_size):
        text = tokenizer.decode(anchor + [i])[len(base):]
        if i in info.special_token_ids or "\ufffd" in text:
            continue
        assert info.decoded_vocab[i] == text.encode(), (i, tokenizer.id_to_token(i))
        checked += 1
    assert checked > 150
    assert tokenizer.token_to_id("<0x0A>") in info.special_token_ids  # a raw newline never enters compact JSON


def test_a_budget_below_the_shortest_answer_is_refused_before_generating(backend):
    from inference_pio.services.structured import BudgetTooSmallError

    schema = OutputSchema.of(SCHEMAS["nested_pydantic"])
    need = backend.min_tokens(schema)
    backend.processor(schema, max_tokens=need)  # exactly the minimum is fine
    with pytest.raises(BudgetTooSmallError, match=f"takes {need} tokens.*budget is {need - 1}"):
        backend.processor(schema, max_tokens=need - 1)


@pytest.mark.parametrize("name", ["nested_pydantic", "array_of_objects", "deep_nesting", "free_dict"])
def test_every_budget_from_the_minimum_up_completes(model, backend, name):
    """The budget is part of the grammar state: at each budget just above the minimum, sampled output
    (temperature 1, so the model keeps opening values) still closes in time."""
    schema = OutputSchema.of(SCHEMAS[name])
    need = backend.min_tokens(schema)
    prompt = model.tokenize("JSON")
    for slack in range(0, 10):
        processor = backend.processor(schema, max_tokens=need + slack)
        [result] = model.generate(prompt, max_tokens=need + slack, temperature=1.0, seed=slack,
                                  logits_processors=(processor,))
        assert result.finish_reason == "stop" and len(result.token_ids) <= need + slack, result.text
        schema.parse(result.text)


def test_the_closing_path_takes_whole_keys(model, backend):
    """Closing spells a required key with the longest allowed tokens, not one character per token."""
    long_keys = {"type": "object", "additionalProperties": False, "required": ["international_organization"],
                 "properties": {"international_organization": {"type": "string"}}}
    text = '{"international_organization":""}'
    assert backend.min_tokens(long_keys) < len(text)  # fewer tokens than characters
