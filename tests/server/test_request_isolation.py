"""Through the HTTP API: a request whose logits processor raises ends alone, with an error event (streaming)
or a JSON 500 (not), while a concurrent innocent stream gets every chunk and its [DONE]."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

import inference_pio
from inference_pio.server import ServedModel, ServerState, create_app
from inference_pio.server import chat as chat_route

from tests.server.chat_checkpoint import write_chat_checkpoint

MODEL = "tiny"


class Boom(RuntimeError):
    pass


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    model = inference_pio.load(write_chat_checkpoint(tmp_path_factory.mktemp("isolation")), dtype="float32",
                               max_seq_len=256)
    engine = model.async_engine()
    yield create_app(ServerState(ServedModel(MODEL, model, engine)))
    engine.shutdown()
    model.close()


@pytest.fixture
def faulty_json(monkeypatch):
    """response_format json_object gets a processor that raises after 3 tokens."""
    def processors_for(model, response_format):
        if response_format is None:
            return tuple

        def processor(output_ids, logits):
            if len(output_ids) >= 3:
                raise Boom("the grammar failed")
        return lambda: (processor,)

    monkeypatch.setattr(chat_route, "processors_for", processors_for)


def body(max_tokens: int, stream: bool, faulty: bool) -> dict:
    out = {"model": MODEL, "messages": [{"role": "user", "content": "Say many things"}], "max_tokens": max_tokens,
           "temperature": 0, "ignore_eos": True, "stream": stream, "stream_options": {"include_usage": True}}
    return {**out, "response_format": {"type": "json_object"}} if faulty else out


def events(text: str) -> list:
    return [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]


def test_innocent_stream_completes_beside_a_failing_request(app, faulty_json):
    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://test", timeout=120) as c:
            return await asyncio.gather(
                c.post("/v1/chat/completions", json=body(200, True, False)),
                *(c.post("/v1/chat/completions", json=body(200, True, True)) for _ in range(3)),
                c.post("/v1/chat/completions", json=body(200, False, True)))

    innocent, *faulty_streams, faulty_plain = asyncio.run(main())
    sent = events(innocent.text)
    assert innocent.status_code == 200 and sent[-1] == "[DONE]"
    chunks = [json.loads(e) for e in sent[:-1]]
    assert not any("error" in c for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 200
    for r in faulty_streams:
        sent = events(r.text)
        assert r.status_code == 200 and sent[-1] == "[DONE]"
        error = json.loads(sent[-2])["error"]
        assert error["type"] == "server_error" and "Boom" in error["message"]
    assert faulty_plain.status_code == 500
    error = faulty_plain.json()["error"]
    assert error["type"] == "server_error" and "the grammar failed" in error["message"]


def test_server_serves_after_the_faults(app):
    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://test", timeout=120) as c:
            return await c.post("/v1/chat/completions", json=body(5, False, False))

    r = asyncio.run(main())
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 5
