"""The NLP service interface (after Parlant's ``parlant.core.nlp``): generators, embedders, moderation, tokenizers.

Every service -- a local model, a remote OpenAI-compatible one, the ``ModelSwitcher`` -- implements
:class:`NLPService`. All methods that touch a model are coroutines and never block the event loop.

Results mirror Parlant's dataclasses field for field, so the Parlant adapter only re-wraps them:
``SchematicGenerationResult(content, info=GenerationInfo(schema_name, model, duration,
usage=UsageInfo(input_tokens, output_tokens, extra)))``, ``EmbeddingResult(vectors)``,
``ModerationCheck(flagged, tags)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class UsageInfo:
    input_tokens: int
    output_tokens: int
    extra: Mapping[str, int] | None = None


@dataclass(frozen=True)
class GenerationInfo:
    """``duration`` in seconds; ``model`` is the id of the model that answered (after any fallback)."""

    schema_name: str
    model: str
    duration: float
    usage: UsageInfo


@dataclass(frozen=True)
class SchematicGenerationResult(Generic[T]):
    """``content``: the validated object (a pydantic model instance, or a dict for free JSON)."""

    content: T
    info: GenerationInfo


@dataclass(frozen=True)
class EmbeddingResult:
    """``vectors[i]``: the unit-length embedding of ``texts[i]`` (list of floats)."""

    vectors: Sequence[Sequence[float]]


@dataclass(frozen=True)
class ModerationCheck:
    flagged: bool
    tags: list[str]


class EstimatingTokenizer(ABC):
    """Counts the tokens of a prompt (exactly for local models, an estimate for remote ones)."""

    @abstractmethod
    async def estimate_token_count(self, prompt: str) -> int: ...


class SchematicGenerator(ABC, Generic[T]):
    """Generates one object of ``schema`` for a prompt.

    ``hints`` (all optional): ``temperature`` (default 0), ``max_tokens``, ``seed``, ``top_p``.
    """

    schema: Any

    @abstractmethod
    async def generate(self, prompt: str, hints: Mapping[str, Any] | None = None) -> SchematicGenerationResult[T]: ...

    @property
    @abstractmethod
    def id(self) -> str: ...

    @property
    @abstractmethod
    def max_tokens(self) -> int:
        """Context window of the underlying model (prompt + output tokens)."""

    @property
    @abstractmethod
    def tokenizer(self) -> EstimatingTokenizer: ...


class Embedder(ABC):
    @abstractmethod
    async def embed(self, texts: Sequence[str], hints: Mapping[str, Any] | None = None) -> EmbeddingResult: ...

    @property
    @abstractmethod
    def id(self) -> str: ...

    @property
    @abstractmethod
    def max_tokens(self) -> int: ...

    @property
    @abstractmethod
    def tokenizer(self) -> EstimatingTokenizer: ...

    @property
    @abstractmethod
    def dimensions(self) -> int:
        """Vector length; known after the model is loaded (the first ``embed`` loads it)."""


class ModerationService(ABC):
    @abstractmethod
    async def moderate(self, text: str) -> ModerationCheck: ...


class TextStream:
    """One streamed answer: ``async for piece in stream`` yields text pieces; ``info`` (a GenerationInfo) is
    readable once the stream is exhausted."""

    def __init__(self, pieces: AsyncIterator[str]):
        self._pieces = pieces
        self._info: GenerationInfo | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self._pieces

    def finish(self, info: GenerationInfo) -> None:
        self._info = info

    @property
    def info(self) -> GenerationInfo:
        if self._info is None:
            raise RuntimeError("the generation info is known once the stream is exhausted")
        return self._info


class StreamingTextGenerator(ABC):
    """Free text, streamed. ``hints``: ``temperature`` (default 0), ``max_tokens``, ``seed``, ``top_p``."""

    @abstractmethod
    def generate(self, prompt: str, hints: Mapping[str, Any] | None = None) -> TextStream: ...

    @property
    @abstractmethod
    def id(self) -> str: ...

    @property
    @abstractmethod
    def tokenizer(self) -> EstimatingTokenizer: ...


class NLPService(ABC):
    """A model (or a set of models) behind the four capabilities Parlant asks for."""

    @property
    @abstractmethod
    def model_id(self) -> str:
        """The id of the model this service answers with (``local/llama/x``, ``openai/gpt-4o``)."""

    @abstractmethod
    async def get_schematic_generator(self, schema: Any, hints: Mapping[str, Any] | None = None
                                      ) -> SchematicGenerator: ...

    @abstractmethod
    async def get_embedder(self, hints: Mapping[str, Any] | None = None) -> Embedder: ...

    @abstractmethod
    async def get_moderation_service(self) -> ModerationService: ...

    @abstractmethod
    async def get_tokenizer(self) -> EstimatingTokenizer: ...

    @property
    def supports_streaming(self) -> bool:
        """Does :meth:`get_streaming_text_generator` give one?"""
        return False

    async def get_streaming_text_generator(self, hints: Mapping[str, Any] | None = None) -> StreamingTextGenerator:
        raise NotImplementedError(f"{self.model_id}: this service does not stream text (see supports_streaming)")

    async def aclose(self) -> None:
        """Frees what the service holds (a loaded model, an HTTP client). Idempotent."""


class ServiceError(RuntimeError):
    """A service could not answer (the model failed, the remote returned an error, the output was invalid)."""


__all__ = [
    "EmbeddingResult", "Embedder", "EstimatingTokenizer", "GenerationInfo", "ModerationCheck", "ModerationService",
    "NLPService", "SchematicGenerationResult", "SchematicGenerator", "ServiceError", "StreamingTextGenerator",
    "TextStream", "UsageInfo",
]
