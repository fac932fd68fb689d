"""The OpenAI-compatible remote service against our own server (``pio serve`` on loopback, the tiny model):
structured output goes through the server's response_format grammar and validates here."""

from __future__ import annotations

import asyncio
from typing import Literal

import pydantic
import pytest

from inference_pio.services import OpenAIRemoteService, RemoteServiceError
from tests.server.serving import running_pio_serve

pytestmark = pytest.mark.slow


class Capital(pydantic.BaseModel):
    country: str = pydantic.Field(max_length=12)
    city: str = pydantic.Field(max_length=12)
    confidence: Literal["low", "high"]


@pytest.fixture(scope="module")
def served(checkpoint):
    args = ["--name", "tiny", "--api-key", "key", "--dtype", "float32", "--max-seq-len", "1024"]
    with running_pio_serve(checkpoint, *args) as base:
        yield f"{base}/v1"


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
