"""A tiny random-weight Llama (ChatML template) catalogued by a real ``LocalModelManager``, once per module."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

import pydantic
import pytest

from inference_pio.models import LocalModelManager, ModelType
from tests.server.chat_checkpoint import write_chat_checkpoint

MODEL_ID = "local/llama/tiny"
LOAD = {"dtype": "float32", "max_seq_len": 1024}


class Capital(pydantic.BaseModel):
    country: str = pydantic.Field(max_length=16)
    city: str = pydantic.Field(max_length=16)
    confidence: Literal["low", "high"]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    return write_chat_checkpoint(tmp_path_factory.mktemp("services_tiny"), max_position_embeddings=1024)


@pytest.fixture(scope="module")
def manager(checkpoint, tmp_path_factory):
    manager = LocalModelManager(home=tmp_path_factory.mktemp("pio_home"), progress=False)

    async def setup():
        await manager.initialize()
        await manager.import_path(checkpoint, ModelType.LLAMA, name="tiny")

    asyncio.run(setup())
    return manager


@pytest.fixture(scope="module")
def service(manager):
    from inference_pio.services import LlamaService

    service = LlamaService(model_manager=manager, model_id=MODEL_ID, logger=logging.getLogger("test"),
                           max_tokens=64, embedding_model="self", **LOAD)  # pooled: what the tests check
    yield service
    asyncio.run(service.aclose())


@pytest.fixture(scope="module")
def model(service):
    """The service's loaded model (shared: loading it once serves the whole module)."""
    return asyncio.run(service.model())
