"""Many concurrent streams share the engine (continuous batching) and give what they give alone;
a client that goes away has its request cancelled and its KV blocks freed."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest

from tests.server.conftest import API_KEY, MODEL

PROMPTS = [f"Request number {i} says hello" for i in range(32)]


def test_32_concurrent_streams_match_their_solo_answers(client, aclient):
    alone = [client.completions.create(model=MODEL, prompt=p, max_tokens=12, temperature=0).choices[0].text
             for p in PROMPTS]

    async def stream(prompt):
        text = ""
        async for chunk in await aclient.completions.create(model=MODEL, prompt=prompt, max_tokens=12,
                                                            temperature=0, stream=True):
            text += "".join(c.text for c in chunk.choices)
        return text

    async def all_streams():
        return await asyncio.gather(*(stream(p) for p in PROMPTS))

    assert asyncio.run(all_streams()) == alone


def _counter(server, name: str) -> float:
    """A metric's value from /metrics (0 when not exported yet)."""
    match = re.search(rf"^{name} (\S+)$", httpx.get(f"{server.base}/metrics").text, re.M)
    return float(match.group(1)) if match else 0.0


def test_disconnected_stream_is_cancelled_and_frees_blocks(server):
    cancelled = _counter(server, "pio_requests_cancelled_total")
    tokens = _counter(server, "pio_completion_tokens_total")
    body = {"model": MODEL, "prompt": "Keep going", "max_tokens": 240, "temperature": 0, "stream": True,
            "ignore_eos": True}
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {API_KEY}"}) as http:
        with http.stream("POST", f"{server.v1}/completions", json=body) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
        # leaving the block closes the connection mid-stream (at once: the tiny model decodes fast)
    deadline = time.monotonic() + 20
    while _counter(server, "pio_running") or _counter(server, "pio_kv_blocks_used"):
        if time.monotonic() > deadline:
            pytest.fail("the cancelled request kept running or kept its KV blocks")
        time.sleep(0.1)
    assert _counter(server, "pio_requests_cancelled_total") == cancelled + 1
    assert _counter(server, "pio_completion_tokens_total") - tokens < 240
