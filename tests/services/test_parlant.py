"""The Parlant adapter against the installed parlant package's own interfaces."""

from __future__ import annotations

import asyncio
import inspect

import pytest

parlant_nlp = pytest.importorskip("parlant.core.nlp.service", reason="parlant is an optional extra (pip install parlant)")

from parlant.core.common import DefaultBaseModel  # noqa: E402
from parlant.core.nlp.embedding import Embedder, EmbeddingResult  # noqa: E402
from parlant.core.nlp.generation import SchematicGenerationResult, SchematicGenerator  # noqa: E402
from parlant.core.nlp.generation_info import GenerationInfo  # noqa: E402
from parlant.core.nlp.moderation import ModerationCheck, ModerationService  # noqa: E402

from inference_pio.integrations.parlant import ParlantNLPService  # noqa: E402
from tests.services.conftest import MODEL_ID  # noqa: E402


class Verdict(DefaultBaseModel):
    answer: str
    sure: bool


def abstract_members(cls) -> set[str]:
    return set(getattr(cls, "__abstractmethods__", ()))


def test_every_abstract_member_is_implemented(service):
    adapter = ParlantNLPService(service)  # instantiating proves no abstract member is left
    assert isinstance(adapter, parlant_nlp.NLPService)
    assert abstract_members(parlant_nlp.NLPService) <= {n for n, _ in inspect.getmembers(type(adapter))}
    assert adapter.supports_streaming is True  # a local model streams


def test_streaming_text_through_parlant_types(service, model):
    from parlant.core.nlp.generation import StreamingTextGenerator

    adapter = ParlantNLPService(service)

    async def main():
        generator = await adapter.get_streaming_text_generator()
        result = generator.generate("Say hello", {"max_tokens": 12, "temperature": 0})
        with pytest.raises(RuntimeError):
            result.info  # noqa: B018 -- not before the stream is consumed
        chunks = [chunk async for chunk in result.stream]
        return generator, result, chunks

    generator, result, chunks = asyncio.run(main())
    assert isinstance(generator, StreamingTextGenerator) and generator.id == MODEL_ID
    assert chunks[-1] is None and all(isinstance(c, str) and c for c in chunks[:-1])
    prompt = model.apply_chat_template([{"role": "user", "content": "Say hello"}])
    [expected] = model.generate(prompt, max_tokens=12, temperature=0)
    assert "".join(chunks[:-1]) == expected.text
    assert result.info.usage.output_tokens == len(expected.token_ids)
    assert result.info.usage.input_tokens == len(prompt)


def test_services_that_do_not_stream_say_so(manager):
    from inference_pio.services import OpenAIRemoteService

    adapter = ParlantNLPService(OpenAIRemoteService("openai/x", base_url="http://127.0.0.1:9/v1"))
    assert adapter.supports_streaming is False
    with pytest.raises(NotImplementedError, match="supports_streaming"):
        asyncio.run(adapter.get_streaming_text_generator())


def test_schematic_generation_through_parlant_types(service):
    adapter = ParlantNLPService(service)

    async def main():
        generator = await adapter.get_schematic_generator(Verdict)
        return generator, await generator.generate("Is Paris in France?", {"temperature": 1.0, "seed": 1})

    generator, result = asyncio.run(main())
    assert isinstance(generator, SchematicGenerator) and generator.schema is Verdict
    assert generator.id == MODEL_ID and generator.max_tokens == 1024
    assert generator.__orig_class__.__args__ == (Verdict,)
    assert isinstance(result, SchematicGenerationResult) and isinstance(result.content, Verdict)
    assert isinstance(result.info, GenerationInfo) and result.info.usage.output_tokens > 0
    assert asyncio.run(generator.tokenizer.estimate_token_count("hello world")) > 0


def test_embedder_and_moderation(service):
    from parlant.core.nlp.moderation import CustomerModerationContext

    adapter = ParlantNLPService(service)

    async def main():
        embedder = await adapter.get_embedder()
        assert (await adapter.get_embedder())._embedder is embedder._embedder  # one shared embedder
        vectors = await embedder.embed(["hello", "world"])
        moderation = await adapter.get_moderation_service()
        check = await moderation.moderate_customer(CustomerModerationContext(session=None, message="hi there"))
        return embedder, vectors, moderation, check

    embedder, vectors, moderation, check = asyncio.run(main())
    assert isinstance(embedder, Embedder) and isinstance(vectors, EmbeddingResult)
    assert len(vectors.vectors) == 2 and len(vectors.vectors[0]) == embedder.dimensions
    assert isinstance(moderation, ModerationService) and isinstance(check, ModerationCheck)
    assert set(check.tags) <= {"jailbreak", "harassment", "hate", "illicit", "self-harm", "sexual", "violence"}


@pytest.fixture(scope="module")
def parlant_server_module(tmp_path_factory):
    """parlant.bin.server (it makes its home folder when imported: point it at a temporary one)."""
    import importlib
    import os
    import sys

    if "parlant.bin.server" not in sys.modules:
        os.environ.setdefault("PARLANT_HOME", str(tmp_path_factory.mktemp("parlant_home")))
    return importlib.import_module("parlant.bin.server")


PARLANT_SCHEMAS = ("MessageSchema", "GenericActionableGuidelineMatchesSchema", "GenericResponseAnalysisSchema",
                   "GenericObservationalGuidelineMatchesSchema", "CannedResponseDraftSchema")


def test_parlants_container_builds_and_keys_our_objects(service, parlant_server_module):
    """What parlant's server does (bin/server.py): a generator per schema keyed by __orig_class__, and the
    embedder built by the container from type(await nlp.get_embedder())."""
    from lagom import Container
    from parlant.core.nlp.embedding import EmbedderFactory

    server = parlant_server_module
    container = Container()
    adapter = ParlantNLPService(service)
    container[parlant_nlp.NLPService] = adapter

    async def main():
        schemas = [getattr(server, name) for name in PARLANT_SCHEMAS]
        generators = {}
        for schema in schemas:
            generator = await adapter.get_schematic_generator(schema)
            server._define_singleton_value(container, SchematicGenerator[schema], generator)  # raises on a clash
            generators[schema] = generator
        embedder_type = type(await adapter.get_embedder())
        embedder = EmbedderFactory(container).create_embedder(embedder_type)
        return schemas, generators, embedder, await embedder.embed(["hello"])

    schemas, generators, embedder, vectors = asyncio.run(main())
    for schema in schemas:
        assert container[SchematicGenerator[schema]] is generators[schema]
        assert generators[schema].schema is schema
    assert isinstance(embedder, Embedder) and embedder.dimensions == len(vectors.vectors[0])
    # Parlant names vector collections after this class: it carries the embedding model's identity.
    assert type(embedder).__name__ == f"PioEmbedder_local_llama_tiny_{embedder.dimensions}"


def test_unsupported_parlant_versions_are_a_clear_error():
    from inference_pio.integrations.parlant.version import check_parlant_version

    assert check_parlant_version("3.2.0") == "3.2.0" and check_parlant_version("3.3.2") == "3.3.2"
    for version in ("3.1.9", "3.4.0", "4.0.0", "2.9"):
        with pytest.raises(ImportError, match=f"parlant {version} is installed.*3.2,<3.4"):
            check_parlant_version(version)


def test_parlant_schemas_complete_within_budgets_just_above_the_minimum(model, parlant_server_module):
    """Parlant's own (large, nested) schemas on random weights at temperature 1: always parse and validate."""
    from inference_pio.services.schemas import OutputSchema
    from inference_pio.services.structured import GrammarBackend

    backend = GrammarBackend.for_model(model)
    prompt = model.tokenize("Answer as JSON")
    for name in PARLANT_SCHEMAS:
        schema = OutputSchema.of(getattr(parlant_server_module, name))
        need = backend.min_tokens(schema)
        for seed, slack in enumerate((0, 1, 3, 12)):
            processor = backend.processor(schema, max_tokens=need + slack)
            [result] = model.generate(prompt, max_tokens=need + slack, temperature=1.0, seed=seed,
                                      logits_processors=(processor,))
            assert result.finish_reason == "stop" and len(result.token_ids) <= need + slack, (name, result.text)
            schema.parse(result.text)
