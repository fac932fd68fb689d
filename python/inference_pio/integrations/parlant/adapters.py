"""Parlant's NLP object types over ours: tokenizer, schematic / streaming generators, embedder, moderation.

Each is built the way parlant's server keys it in its dependency container (lagom): a schematic generator
is instantiated as ``ParlantSchematicGeneratorAdapter[Schema](...)`` so its ``__orig_class__`` (the key)
differs per schema, and the embedder class is constructible by the container itself (its one argument is
the container's ``NLPService``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

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

from ...services.interface import EstimatingTokenizer, GenerationInfo, SchematicGenerationResult

T = TypeVar("T")


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


class ParlantSchematicGeneratorAdapter(ParlantSchematicGenerator[T], Generic[T]):
    """Build with :func:`schematic_generator`: parlant keys each generator by its ``__orig_class__``."""

    def __init__(self, generator, schema: Any):
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
    """Parlant's server resolves the embedder as ``container[type(await nlp.get_embedder())]`` and lagom builds
    that class from its constructor's annotations: the one argument, parlant's ``NLPService``, is the
    container's service, our ``ParlantNLPService``, whose shared embedder every instance wraps."""

    def __init__(self, nlp_service: ParlantService):
        embedder = getattr(nlp_service, "shared_embedder", None)
        if embedder is None:
            raise TypeError(f"ParlantEmbedderAdapter wraps the embedder of a ParlantNLPService that has made one "
                            f"(await get_embedder() first), got {type(nlp_service).__name__}")
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


def schematic_generator(generator, schema: Any) -> ParlantSchematicGeneratorAdapter:
    """``ParlantSchematicGeneratorAdapter[schema]`` around ``generator``: a distinct ``__orig_class__`` per schema
    (parlant registers each generator in its container under it); a schema that is no type (a JSON-schema
    dict) cannot parametrize a generic and gets the plain class."""
    if isinstance(schema, type):
        return ParlantSchematicGeneratorAdapter[schema](generator, schema)  # type: ignore[valid-type]
    return ParlantSchematicGeneratorAdapter(generator, schema)
