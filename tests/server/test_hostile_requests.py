"""Requests an attacker would send: every one is a 4xx naming what was wrong (never a 500 or a reset
connection), an oversized body is refused early with a 413 while /health keeps answering, and
abandoned non-streaming requests are cancelled and free their KV blocks."""

from __future__ import annotations

import json
import re
import socket
import time

import httpx
import pytest

from tests.server.chat_checkpoint import write_chat_checkpoint
from tests.server.conftest import API_KEY, MODEL
from tests.server.serving import running_pio_serve

HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
COMPLETION = {"model": MODEL, "prompt": "hi", "max_tokens": 2}


def nested(kind: str, depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}} if kind == "objects" else \
            {"type": "array", "items": schema}
    return {"type": "json_schema", "json_schema": {"name": "deep", "schema": schema}}


def deep_arrays(depth: int) -> str:
    return "[" * depth + "]" * depth


# (path, raw JSON body, the field the 400 must name)
BAD = [
    ("/chat/completions", {**CHAT, "top_k": 2**63}, "top_k"),
    ("/chat/completions", {**CHAT, "top_k": 2**200}, "top_k"),
    ("/chat/completions", {**CHAT, "top_k": -1}, "top_k"),
    ("/chat/completions", {**CHAT, "seed": 2**80}, "seed"),
    ("/chat/completions", {**CHAT, "seed": -(2**70)}, "seed"),
    ("/completions", {**COMPLETION, "seed": 2**64}, "seed"),
    ("/chat/completions", {**CHAT, "n": 10**30}, "n"),
    ("/chat/completions", {**CHAT, "max_tokens": 10**30}, "max_tokens"),
    ("/chat/completions", {**CHAT, "max_completion_tokens": -5}, "max_completion_tokens"),
    ("/completions", {**COMPLETION, "max_tokens": 2**64}, "max_tokens"),
    ("/chat/completions", {**CHAT, "temperature": -1e-9}, "temperature"),
    ("/chat/completions", {**CHAT, "top_p": 1.0000001}, "top_p"),
    ("/chat/completions", {**CHAT, "repetition_penalty": 1e300}, "repetition_penalty"),
    ("/chat/completions", {**CHAT, "repetition_penalty": 0}, "repetition_penalty"),
    ("/chat/completions", {**CHAT, "presence_penalty": 1e9}, "presence_penalty"),
    ("/chat/completions", {**CHAT, "frequency_penalty": -3}, "frequency_penalty"),
    ("/chat/completions", {**CHAT, "response_format": nested("objects", 200)}, "response_format"),
    ("/chat/completions", {**CHAT, "response_format": nested("arrays", 900)}, "response_format"),
    ("/chat/completions", {**CHAT, "messages": [{"role": "user", "content": "\ud800x"}]}, "messages.0.content"),
    ("/chat/completions", {**CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "a\udfffb"}]}]},
     "messages.0.content.0.text"),
    ("/chat/completions", {**CHAT, "stop": ["ok", "\udc00"]}, "stop.1"),
    ("/completions", {**COMPLETION, "prompt": "\ud800"}, "prompt"),
    ("/embeddings", {"model": MODEL, "input": ["fine", "\ud83d"]}, "input.1"),
]
# JSON that Python's parser accepts but no number field may hold
RAW = [
    ("/chat/completions", json.dumps(CHAT)[:-1] + ', "temperature": NaN}', "temperature"),
    ("/chat/completions", json.dumps(CHAT)[:-1] + ', "top_p": Infinity}', "top_p"),
    ("/chat/completions", json.dumps(CHAT)[:-1] + ', "repetition_penalty": -Infinity}', "repetition_penalty"),
    ("/chat/completions", json.dumps(CHAT)[:-1] + ', "extra": ' + deep_arrays(5000) + "}", None),
    ("/completions", json.dumps(COMPLETION)[:-1] + ', "user": ' + deep_arrays(900) + "}", "user"),
]


def post(server, path: str, content: str | bytes) -> httpx.Response:
    return httpx.post(f"{server.v1}{path}", content=content, headers=HEADERS, timeout=60)


def encoded(body: dict) -> bytes:
    # json.dumps escapes lone surrogates as \\udxxx, as a hostile client would send them
    return json.dumps(body).encode()


@pytest.mark.parametrize("path,body,field", BAD + RAW, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD + RAW)])
def test_hostile_field_is_a_400_naming_it(server, path, body, field):
    r = post(server, path, body if isinstance(body, str) else encoded(body))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    if field is not None:
        assert field == error["param"] or field in error["message"], error


def test_the_largest_values_accepted_do_work(server):
    r = post(server, "/chat/completions", encoded({**CHAT, "top_k": 2**63 - 1, "seed": 2**64 - 17, "n": 2,
                                                   "temperature": 1e-30, "repetition_penalty": 100}))
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 2


def test_a_schema_as_deep_as_allowed_compiles(server):
    r = post(server, "/chat/completions", encoded({**CHAT, "max_tokens": 4, "response_format": nested("objects", 40)}))
    assert r.status_code == 200, r.text


# ----- size limit -----

def _raw_request(server, headers: str, path: str = "/v1/chat/completions") -> socket.socket:
    host, port = server.base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall((f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}\r\n"
               f"Content-Type: application/json\r\n{headers}\r\n").encode())
    return s


def _status(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        data = sock.recv(4096)
        if not data:
            break
        head += data
    return int(head.split(b" ")[1])


def test_declared_oversized_body_is_refused_before_it_is_sent(server):
    with _raw_request(server, f"Content-Length: {10 * 2**20}\r\n") as s:
        s.sendall(b'{"model": "')  # a few bytes of the 10 MB: the answer must not wait for the rest
        assert _status(s) == 413


def test_streamed_oversized_body_is_refused_and_health_answers_meanwhile(server):
    health_during_upload = 0
    with _raw_request(server, "Transfer-Encoding: chunked\r\n") as s:
        chunk = b"x" * 2**16
        sent = 0
        try:
            while sent < 10 * 2**20:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
                if sent % 2**20 == 0 and sent <= 6 * 2**20:  # mid-upload: the server serves others
                    assert httpx.get(f"{server.base}/health", timeout=30).status_code == 200
                    health_during_upload += 1
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed once the limit was passed
        assert _status(s) == 413
    assert health_during_upload == 6


def test_a_body_under_the_limit_is_served(server):
    r = post(server, "/completions", encoded({**COMPLETION, "prompt": "word " * 50, "user": "u" * 2**20}))
    assert r.status_code == 200, r.text


# ----- abandoned non-streaming requests -----

def _metric(base: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", httpx.get(f"{base}/metrics").text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.slow
def test_abandoned_non_streaming_requests_are_cancelled_and_free_their_blocks(tmp_path):
    """The tiny model decodes 256 tokens of context in no time: a server with a long context keeps 8 requests
    of 16 choices busy long enough to leave them mid-way."""
    checkpoint = write_chat_checkpoint(tmp_path, max_position_embeddings=4096)
    with running_pio_serve(checkpoint, "--name", MODEL, "--dtype", "float32", "--max-seq-len", "4096") as base:
        server = type("Server", (), {"base": base})
        body = json.dumps({"model": MODEL, "prompt": "Keep going", "max_tokens": 4000, "temperature": 0, "n": 16,
                           "ignore_eos": True}).encode()
        sockets = [_raw_request(server, f"Content-Length: {len(body)}\r\n", "/v1/completions") for _ in range(8)]
        for s in sockets:
            s.sendall(body)
        deadline = time.monotonic() + 60
        while _metric(base, "pio_running") + _metric(base, "pio_waiting") < 8 * 16:
            if time.monotonic() > deadline:
                pytest.fail("the requests never started")
            time.sleep(0.05)
        for s in sockets:
            s.close()
        deadline = time.monotonic() + 60
        while _metric(base, "pio_running") or _metric(base, "pio_waiting") or _metric(base, "pio_kv_blocks_used"):
            if time.monotonic() > deadline:
                pytest.fail("abandoned requests kept running or kept their KV blocks")
            time.sleep(0.1)
        assert _metric(base, "pio_requests_cancelled_total") == 8
        assert _metric(base, "pio_completion_tokens_total") == 0  # none ran to its end
