"""Every malformed request gets a 4xx with an OpenAI-style error body, and the server keeps serving."""

from __future__ import annotations

import httpx
import pytest

from tests.server.conftest import API_KEY, MODEL

HEADERS = {"Authorization": f"Bearer {API_KEY}"}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def post(server, path, body=None, content=None):
    return httpx.post(f"{server.v1}{path}", json=body, content=content, timeout=60,
                      headers={**HEADERS, "Content-Type": "application/json"})


@pytest.mark.parametrize("path,body,status,needle", [
    ("/chat/completions", {**CHAT, "model": "nope"}, 404, "does not exist"),
    ("/completions", {"model": "nope", "prompt": "x"}, 404, "does not exist"),
    ("/chat/completions", {**CHAT, "max_tokens": -1}, 400, "max_tokens"),
    ("/chat/completions", {**CHAT, "max_tokens": 0}, 400, "max_tokens"),
    ("/chat/completions", {**CHAT, "max_tokens": 10**9}, 400, "context"),
    ("/completions", {"model": MODEL, "prompt": "word " * 400, "max_tokens": 4}, 400, "context"),
    ("/chat/completions", {**CHAT, "temperature": "hot"}, 400, "temperature"),
    ("/chat/completions", {**CHAT, "temperature": 5}, 400, "temperature"),
    ("/chat/completions", {**CHAT, "top_p": 0}, 400, "top_p"),
    ("/chat/completions", {**CHAT, "n": 0}, 400, "n"),
    ("/chat/completions", {**CHAT, "messages": []}, 400, "messages"),
    ("/chat/completions", {**CHAT, "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
    ("/chat/completions", {"messages": CHAT["messages"]}, 400, "model"),
    ("/chat/completions", {**CHAT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("/chat/completions", {**CHAT, "response_format": {"type": "json_schema"}}, 400, "schema"),
    ("/chat/completions", {**CHAT, "response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "no-such-type"}}}}}}, 400, "schema"),
    ("/completions", {"model": MODEL, "prompt": [10**7], "max_tokens": 2}, 400, "token ids"),
    ("/completions", {"model": MODEL, "prompt": "x", "max_tokens": 2, "logprobs": 6}, 400, "logprobs"),  # at most 5
    ("/embeddings", {"model": "nope", "input": "x"}, 404, "does not exist"),
])
def test_bad_request_gets_openai_error(server, path, body, status, needle):
    r = post(server, path, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in error["message"] or needle == error.get("param"), error
    assert error["type"] in ("invalid_request_error", "not_found_error")


def test_invalid_json_body(server):
    r = post(server, "/chat/completions", content=b"{not json")
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


def test_server_still_serves_after_bad_requests(server):
    r = post(server, "/chat/completions", {**CHAT, "max_tokens": 2, "temperature": 0})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
