"""``pio serve`` with prefix caching on (the default) and off: ``/metrics`` counts the prompt tokens
looked up and found in the prefix cache and the blocks it holds; ``--no-prefix-caching`` finds none.
The command runs in-process with uvicorn replaced, and its app is driven through a test client."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from inference_pio.cli import main

PROMPT = "The quick brown fox jumps over the lazy dog while the cat watches from the warm windowsill. " * 3


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


@pytest.fixture
def serve_app(checkpoint, monkeypatch):
    """Runs ``pio serve CHECKPOINT *flags`` and returns the app it would have served."""
    import uvicorn

    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))

    def run(*flags: str):
        assert main(["serve", str(checkpoint), "--name", "tiny", "--dtype", "float32", "--max-seq-len", "256",
                     *flags]) == 0
        return apps[-1]

    return run


@pytest.mark.parametrize("flags", [(), ("--no-prefix-caching",)])
def test_metrics_count_prefix_cache_hits_and_the_flag_turns_caching_off(serve_app, flags):
    with TestClient(serve_app(*flags)) as client:
        body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 2, "temperature": 0}
        texts = [client.post("/v1/completions", json=body).json()["choices"][0]["text"] for _ in range(2)]
        assert texts[0] == texts[1]
        usage = client.post("/v1/completions", json=body).json()["usage"]
        scraped = client.get("/metrics").text
    queries = metric(scraped, "pio_prefix_cache_queries_total")
    hits = metric(scraped, "pio_prefix_cache_hits_total")
    blocks = metric(scraped, "pio_prefix_cache_blocks")
    if flags:
        assert (hits, blocks) == (0, 0)
    else:
        assert queries == 3 * usage["prompt_tokens"]
        # the second and third requests find every full block but the one holding the last prompt token
        assert hits == 2 * ((usage["prompt_tokens"] - 1) // 16 * 16) > 0
        assert blocks >= (usage["prompt_tokens"] - 1) // 16
