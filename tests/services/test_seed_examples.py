"""The seed's usage examples (seeds/000), as written there, with inference_pio's package paths and a
logging.Logger for Parlant's ConsoleLogger. The tiny random model stands in for llama-7b."""

from __future__ import annotations

import asyncio
import logging
from typing import Dict

import pytest

from inference_pio.models import LocalModelManager, ModelType
from inference_pio.services import LlamaService, ModelSwitcher, NLPServiceFactory, UnknownModelError
from tests.services.conftest import LOAD


@pytest.fixture
def home(tmp_path, monkeypatch, checkpoint):
    monkeypatch.setenv("INFERENCE_PIO_HOME", str(tmp_path / "home"))
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "INFERENCE_PIO_SERVICES_CONFIG", "INFERENCE_PIO_DEFAULT_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INFERENCE_PIO_DTYPE", "float32")
    monkeypatch.setenv("INFERENCE_PIO_MAX_SEQ_LEN", "1024")

    async def catalogue():
        manager = LocalModelManager(logger=logging.getLogger("seed"), progress=False)
        await manager.initialize()
        await manager.import_path(checkpoint, ModelType.LLAMA, name="llama-7b")

    asyncio.run(catalogue())


def test_manager_service_switcher_and_factory_as_in_the_seed(home):
    logger = logging.getLogger("seed")

    async def seed():
        manager = LocalModelManager(logger=logger)
        await manager.initialize()
        llama_models = manager.list_models(ModelType.LLAMA)
        deepseek_models = manager.list_models(ModelType.DEEPSEEK)
        model = manager.get_model("local/llama/llama-7b")

        service = LlamaService(model_manager=manager, model_id="local/llama/llama-7b", logger=logger, **LOAD)
        generator = await service.get_schematic_generator(Dict)
        result = await generator.generate("What is the capital of France?")
        embedder = await service.get_embedder()
        embeddings = await embedder.embed(["What is the capital of France?"])
        await service.aclose()

        switcher = ModelSwitcher(logger=logger, model_manager=manager, default_model_id="local/llama/llama-7b",
                                 fallback_model_id="openai/gpt-4o", local_options=LOAD)
        await switcher.initialize()
        switcher.set_model("local/llama/llama-7b")
        models = switcher.list_available_models()
        switched = await (await switcher.get_schematic_generator(Dict)).generate("What is the capital of France?")
        await switcher.aclose()

        factory = NLPServiceFactory(logger=logger)
        await factory.initialize()
        llama_service = await factory.create_service("llama")
        with pytest.raises(UnknownModelError, match="no deepseek model is installed"):
            await factory.create_service("deepseek")
        factory_switcher = await factory.create_service("model_switcher")
        default = await factory.create_default_service()
        return (llama_models, deepseek_models, model, result, embeddings, models, switched, llama_service,
                factory_switcher, default)

    (llama_models, deepseek_models, model, result, embeddings, models, switched, llama_service, factory_switcher,
     default) = asyncio.run(seed())
    assert [m.id for m in llama_models] == ["local/llama/llama-7b"] and deepseek_models == []
    assert model.family is ModelType.LLAMA
    assert isinstance(result.content, dict) and result.info.model == "local/llama/llama-7b"
    assert len(embeddings.vectors) == 1 and len(embeddings.vectors[0]) in (64, 384)  # pooled, or MiniLM when installed
    assert models == ["local/llama/llama-7b", "openai/gpt-4o"]
    assert isinstance(switched.content, dict) and switched.info.model == "local/llama/llama-7b"
    assert isinstance(llama_service, LlamaService) and llama_service.load_options == LOAD
    assert isinstance(factory_switcher, ModelSwitcher) and factory_switcher.fallback_model_id is None
    assert isinstance(default, LlamaService) and default.model_id == "local/llama/llama-7b"
