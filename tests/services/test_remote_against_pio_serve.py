"""The OpenAI-compatible remote service against our own server (``pio serve`` on loopback, the tiny model):
structured output goes through the server's response_format grammar and validates here."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Literal

import httpx
import pydantic
import pytest

from inference_pio.services import OpenAIRemoteService, RemoteServiceError
from tests.services.fault_server import free_port

pytestmark = pytest.mark.slow


class Capital(pydantic.BaseModel):
    country: str = pydantic.Field(max_length=12)
    city: str = pydantic.Field(max_length=12)
    confidence: Literal["low", "high"]


@pytest.fixture(scope="module")
def served(checkpoint):
    port = free_port()
    cmd = [sys.executable, "-m", "inference_pio", "serve", str(checkpoint), "--name", "tiny", "--port", str(port),
           "--api-key", "key", "--dtype", "float32", "--max-seq-len", "1024", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"pio serve exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"pio serve did not come up:\n{proc.stdout.read()}")
        time.sleep(0.2)
    yield f"{base}/v1"
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_structured_output_from_our_server(served):
    service = OpenAIRemoteService("pio/tiny", base_url=served, api_key="key", max_retries=0)

    async def main():
        generator = await service.get_schematic_generator(Capital)
        hints = [{"temperature": 1.0, "seed": i, "max_tokens": 120} for i in range(3)]
        return await asyncio.gather(*(generator.generate("Capital of France?", h) for h in hints))

    for result in asyncio.run(main()):
        assert isinstance(result.content, Capital) and result.info.model == "pio/tiny"
        assert result.info.usage.input_tokens > 10 and result.info.usage.output_tokens > 5


def test_wrong_key_and_unknown_model_are_clear(served):
    async def main(service):
        await (await service.get_schematic_generator(Capital)).generate("x")

    with pytest.raises(RemoteServiceError, match="HTTP 401"):
        asyncio.run(main(OpenAIRemoteService("pio/tiny", base_url=served, api_key="wrong", max_retries=0)))
    with pytest.raises(RemoteServiceError, match="HTTP 404"):
        asyncio.run(main(OpenAIRemoteService("pio/nope", base_url=served, api_key="key", max_retries=0)))
