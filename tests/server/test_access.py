"""The API-key check and the request metrics (plain ASGI middleware) through the app, without a model."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from inference_pio.server import ServerState, create_app


def count(client: TestClient, endpoint: str, status: str) -> float:
    text = client.get("/metrics").text
    match = re.search(rf'^pio_requests_total{{endpoint="{endpoint}",status="{status}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_the_key_is_required_on_the_api_and_each_answer_is_counted():
    client = TestClient(create_app(ServerState(None, api_key="k")))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "k"}):
        r = client.get("/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/models", headers={"Authorization": "Bearer k"}).status_code == 200
    r = client.post("/v1/completions", headers={"Authorization": "Bearer k"}, json={"model": "none", "prompt": "x"})
    assert r.status_code == 404
    assert client.get("/health").status_code == 200  # open without the key
    assert count(client, "/v1/models", "401") == 3
    assert count(client, "/v1/models", "200") == 1
    assert count(client, "/v1/completions", "404") == 1
    text = client.get("/metrics").text
    assert 'pio_request_latency_seconds_count{endpoint="/v1/models"} 1.0' in text  # served ones only
    assert "/health" not in text  # only the API's endpoints are counted


def test_without_a_key_everything_is_open():
    client = TestClient(create_app(ServerState(None)))
    assert client.get("/v1/models").json() == {"object": "list", "data": []}
    assert count(client, "/v1/models", "200") == 1
