"""A feature whose optional package is not installed answers 501 naming the extra, not a bare 500."""

from __future__ import annotations

import sys

from fastapi import FastAPI
from fastapi.testclient import TestClient

from inference_pio.engine.grammar_vocab import load_xgrammar
from inference_pio.server.errors import install_error_handlers


def test_a_missing_extra_is_a_501_naming_it(monkeypatch):
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/v1/chat/completions")
    async def constrained():
        load_xgrammar()  # what response_format and tool calls do first
        return {"ok": True}

    monkeypatch.setitem(sys.modules, "xgrammar", None)  # xgrammar not installed
    response = TestClient(app, raise_server_exceptions=False).post("/v1/chat/completions", json={})
    assert response.status_code == 501
    error = response.json()["error"]
    assert error["code"] == "missing_extra" and 'pip install "inference-pio[grammar]"' in error["message"]
