"""Our NLP services as a Parlant ``NLPService`` (``parlant.core.nlp``), so a Parlant agent runs on our engine.

::

    import parlant.sdk as p
    from inference_pio.integrations.parlant import ParlantNLPService
    from inference_pio.services import NLPServiceFactory

    factory = NLPServiceFactory(logger)
    await factory.initialize()
    service = await factory.create_default_service()          # or a LlamaService, a ModelSwitcher, ...
    async with p.Server(nlp_service=lambda container: ParlantNLPService(service)) as server:
        ...

Written against parlant 3.3 (``supports_streaming`` / ``get_streaming_text_generator`` since 3.2,
``moderate_customer(context)`` since 3.1); the older ``moderate(content)`` is answered too. Streaming
text generation is offered when the wrapped service streams (local models do; the remote service and
the switcher do not, and say so through ``supports_streaming``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parlant.core.nlp.embedding import Embedder as ParlantEmbedder, EmbeddingResult as ParlantEmbeddingResult
from parlant.core.nlp.generation import (SchematicGenerationResult as ParlantGenerationResult,
                                         SchematicGenerator as ParlantSchematicGenerator,
                                         StreamingTextGenerationResult,
                                         StreamingTextGenerator as ParlantStreamingGenerator)
from parlant.core.nlp.generation_info import GenerationInfo as ParlantGenerationInfo, UsageInfo as ParlantUsageInfo
from parlant.core.nlp.moderation import ModerationCheck as ParlantModerationCheck
from parlant.core.nlp.moderation import ModerationService as ParlantModerationService
from parlant.core.nlp.service import NLPService as ParlantService
from parlant.core.nlp.tokenization import EstimatingTokenizer as ParlantTokenizer

from ..services.interface import EstimatingTokenizer, GenerationInfo, NLPService, SchematicGenerationResult


def _prompt_text(prompt: Any) -> str:
    """Parlant passes a ``PromptBuilder`` or a str."""
    return prompt if isinstance(prompt, str) else prompt.build()


class ParlantTokenizerAdapter(ParlantTokenizer):
    def __init__(self, tokenizer: EstimatingTokenizer):
        self._tokenizer = tokenizer

    async def estimate_token_count(self, prompt: str) -> int:
        return await self._tokenizer.estimate_token_count(prompt)


def _info_to_parlant(info: GenerationInfo) -> ParlantGenerationInfo:
    usage = info.usage
    return ParlantGenerationInfo(
        schema_name=info.schema_name, model=info.model, duration=info.duration,
        usage=ParlantUsageInfo(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                               extra=dict(usage.extra) if usage.extra else None))


def _to_parlant(result: SchematicGenerationResult) -> ParlantGenerationResult:
    return ParlantGenerationResult(content=result.content, info=_info_to_parlant(result.info))


class ParlantSchematicGeneratorAdapter(ParlantSchematicGenerator):
    def __init__(self, generator, schema: type):
        self._generator = generator
        self.__dict__["schema"] = schema  # Parlant's `schema` is a cached_property read from __orig_class__

    async def generate(self, prompt: Any, hints: Mapping[str, Any] = {}) -> ParlantGenerationResult:
        return _to_parlant(await self._generator.generate(_prompt_text(prompt), dict(hints)))

    @property
    def id(self) -> str:
        return self._generator.id

    @property
    def max_tokens(self) -> int:
        return self._generator.max_tokens

    @property
    def tokenizer(self) -> ParlantTokenizer:
        return ParlantTokenizerAdapter(self._generator.tokenizer)


class ParlantStreamingAdapter(ParlantStreamingGenerator):
    def __init__(self, generator):
        self._generator = generator

    def generate(self, prompt: Any, hints: Mapping[str, Any] = {}) -> StreamingTextGenerationResult:
        stream = self._generator.generate(_prompt_text(prompt), dict(hints))

        async def pieces():
            async for piece in stream:
                yield piece
            yield None  # Parlant's end-of-stream marker

        return StreamingTextGenerationResult(stream=pieces(), info_getter=lambda: _info_to_parlant(stream.info))

    @property
    def id(self) -> str:
        return self._generator.id

    @property
    def tokenizer(self) -> ParlantTokenizer:
        return ParlantTokenizerAdapter(self._generator.tokenizer)


class ParlantEmbedderAdapter(ParlantEmbedder):
    def __init__(self, embedder):
        self._embedder = embedder

    async def embed(self, texts: list[str], hints: Mapping[str, Any] = {}) -> ParlantEmbeddingResult:
        return ParlantEmbeddingResult(vectors=(await self._embedder.embed(texts, dict(hints))).vectors)

    @property
    def id(self) -> str:
        return self._embedder.id

    @property
    def max_tokens(self) -> int:
        return self._embedder.max_tokens

    @property
    def tokenizer(self) -> ParlantTokenizer:
        return ParlantTokenizerAdapter(self._embedder.tokenizer)

    @property
    def dimensions(self) -> int:
        return self._embedder.dimensions


class ParlantModerationAdapter(ParlantModerationService):
    def __init__(self, moderation):
        self._moderation = moderation

    async def moderate_customer(self, context: Any) -> ParlantModerationCheck:
        """``context``: Parlant's ``CustomerModerationContext`` (its ``message`` is checked)."""
        return await self.moderate(context.message)

    async def moderate(self, content: str) -> ParlantModerationCheck:
        check = await self._moderation.moderate(content)
        return ParlantModerationCheck(flagged=check.flagged, tags=list(check.tags))


class ParlantNLPService(ParlantService):
    """Wraps any :class:`inference_pio.services.NLPService` (local, remote, switcher) for Parlant.

    Embedders are created once and shared: Parlant embeds constantly, and a shared embedder keeps one
    vector space (and, behind a switcher, one pinned model).
    """

    def __init__(self, service: NLPService):
        self.service = service
        self._embedder: ParlantEmbedderAdapter | None = None

    @property
    def supports_streaming(self) -> bool:
        return self.service.supports_streaming

    async def get_streaming_text_generator(self, hints: Mapping[str, Any] = {}) -> ParlantStreamingAdapter:
        """NotImplementedError when the service does not stream (Parlant checks supports_streaming first)."""
        return ParlantStreamingAdapter(await self.service.get_streaming_text_generator(dict(hints)))

    async def get_schematic_generator(self, t: type, hints: Mapping[str, Any] = {}) -> ParlantSchematicGeneratorAdapter:
        return ParlantSchematicGeneratorAdapter(await self.service.get_schematic_generator(t, dict(hints)), t)

    async def get_embedder(self, hints: Mapping[str, Any] = {}) -> ParlantEmbedderAdapter:
        if self._embedder is None:
            self._embedder = ParlantEmbedderAdapter(await self.service.get_embedder(dict(hints)))
        return self._embedder

    async def get_moderation_service(self) -> ParlantModerationAdapter:
        return ParlantModerationAdapter(await self.service.get_moderation_service())


__all__ = ["ParlantNLPService"]
