"""A request through ``pio serve``'s own app in-process (how a replica answers the ingress)."""

from __future__ import annotations

import asyncio
import json

import pytest

from inference_pio.distributed.asgi_call import call_asgi
from tests.server.chat_checkpoint import write_chat_checkpoint

KEY = "k"
AUTH = [("authorization", f"Bearer {KEY}"), ("content-type", "application/json")]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    import inference_pio
    from inference_pio.server import ServedModel, ServerState, create_app

    model = inference_pio.load(write_chat_checkpoint(tmp_path_factory.mktemp("asgi")), dtype="float32",
                               max_seq_len=256)
    served = ServedModel("tiny", model, model.async_engine())
    yield create_app(ServerState(served, None, KEY))
    model.close()


async def collect(app, path, body, headers=AUTH, method="POST"):
    parts = [p async for p in call_asgi(app, method, path, b"", headers, json.dumps(body).encode())]
    return parts[0], b"".join(parts[1:])


def request(stream=False, **extra):
    return {"model": "tiny", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8,
            "temperature": 0, "stream": stream, **extra}


def test_answers_errors_and_streams_like_the_server(app):
    async def main():
        start, body = await collect(app, "/v1/chat/completions", request())
        assert start["status"] == 200
        whole = json.loads(body)["choices"][0]["message"]["content"]
        start, body = await collect(app, "/v1/chat/completions", request(stream=True))
        assert dict(start["headers"])["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in body.decode().splitlines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == whole
        start, body = await collect(app, "/v1/chat/completions", request(), headers=[])
        assert start["status"] == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
        start, body = await collect(app, "/v1/chat/completions", request(model="nope"))
        assert start["status"] == 404 and "nope" in json.loads(body)["error"]["message"]
    asyncio.run(main())


def test_closing_the_stream_aborts_the_engine_request(app):
    engine, cancelled = app.state.pio.generator.engine, app.state.metrics.cancelled

    async def main():
        before = cancelled._value.get()
        parts = call_asgi(app, "POST", "/v1/chat/completions", b"", AUTH,
                          json.dumps(request(stream=True, max_tokens=200, ignore_eos=True)).encode())
        await parts.__anext__()  # the response has started
        await parts.__anext__()  # the role event
        await parts.__anext__()  # the first token
        await parts.aclose()  # the ingress's client went away
        for _ in range(200):
            if cancelled._value.get() == before + 1 and engine.stats()["running"] + engine.stats()["waiting"] == 0:
                return
            await asyncio.sleep(0.05)
        pytest.fail(f"the engine still runs the abandoned request: {engine.stats()}")
    asyncio.run(main())
