"""An OpenAI-compatible remote model (OpenAI itself, ``pio serve``, vLLM, ...) behind the NLP service interface.

::

    service = OpenAIRemoteService("openai/gpt-4o")   # key and URL from OPENAI_API_KEY / OPENAI_BASE_URL
    service = OpenAIRemoteService("openai/tiny", base_url="http://127.0.0.1:8000/v1", api_key="...")

Model ids read ``<provider>/<model>``; the part after the first ``/`` is the model name sent to the API.
Structured output asks the server for ``response_format: json_schema`` (``json_object`` for free JSON)
and validates the answer here too; embeddings use ``/v1/embeddings``. Errors (HTTP status, refused
connection, timeout) surface as :class:`RemoteServiceError` naming the model and the cause.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ..extras import require
from .interface import (EmbeddingResult, Embedder, EstimatingTokenizer, GenerationInfo, NLPService,
                        SchematicGenerationResult, SchematicGenerator, ServiceError, UsageInfo)
from .moderation import DEFAULT_CATEGORIES, ModelModeration
from .schemas import OutputSchema

DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
_KNOWN_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}


class RemoteServiceError(ServiceError):
    """The remote server refused, failed, timed out, or answered something unusable."""


def split_remote_id(model_id: str) -> tuple[str, str]:
    """``"openai/gpt-4o"`` -> ``("openai", "gpt-4o")``; ValueError for an id without a provider."""
    provider, sep, name = model_id.partition("/")
    if not sep or not provider or not name or provider == "local":
        raise ValueError(f"a remote model id reads '<provider>/<model>' (e.g. 'openai/gpt-4o'), got {model_id!r}")
    return provider, name


class CharacterEstimatingTokenizer(EstimatingTokenizer):
    """About four characters per token (English text with BPE vocabularies); remote tokenizers are unknown here."""

    async def estimate_token_count(self, prompt: str) -> int:
        return math.ceil(len(prompt) / 4)


class OpenAIRemoteService(NLPService):
    """``base_url`` / ``api_key``: arguments, else ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``. A server of your own
    (``base_url`` given) needs no key. ``timeout`` (s) and ``max_retries`` go to the ``AsyncOpenAI`` client."""

    def __init__(self, model_id: str = "openai/gpt-4o", *, base_url: str | None = None, api_key: str | None = None,
                 embedding_model: str | None = None, timeout: float = 60.0, max_retries: int = 1,
                 context_window: int = 128_000, logger: logging.Logger | None = None,
                 moderation_categories: Sequence[str] = DEFAULT_CATEGORIES, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        self._model_id = model_id
        self.provider, self.model_name = split_remote_id(model_id)
        self.base_url = base_url or env.get("OPENAI_BASE_URL") or None
        api_key = api_key or env.get("OPENAI_API_KEY")
        if not api_key:
            if self.base_url is None:
                raise ValueError(f"{model_id} needs an API key: pass api_key= or set OPENAI_API_KEY "
                                 "(or point OPENAI_BASE_URL at a server that needs none)")
            api_key = "no-key"  # the client insists on one; a keyless server ignores it
        self.embedding_model = (embedding_model or env.get("INFERENCE_PIO_OPENAI_EMBEDDING_MODEL")
                                or DEFAULT_EMBEDDING_MODEL)
        self.context_window = context_window
        self.moderation_categories = tuple(moderation_categories)
        self.logger = logger or logging.getLogger(__name__)
        [openai] = require("remote", "the OpenAI-compatible remote service", ("openai",))
        AsyncOpenAI = openai.AsyncOpenAI
        self._client_options = {"base_url": self.base_url, "api_key": api_key, "timeout": timeout,
                                "max_retries": max_retries}
        self._client_class = AsyncOpenAI
        self._client = None
        self._client_loop = None

    @property
    def client(self):
        """The ``AsyncOpenAI`` client of the running event loop (its connection pool belongs to one loop, so a
        service used from another loop, e.g. successive ``asyncio.run`` calls, gets a fresh client)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if self._client is None or (loop is not None and loop is not self._client_loop):
            self._client = self._client_class(**self._client_options)
            self._client_loop = loop
        return self._client

    @property
    def model_id(self) -> str:
        return self._model_id

    async def get_schematic_generator(self, schema: Any, hints: Mapping[str, Any] | None = None
                                      ) -> "RemoteSchematicGenerator":
        return RemoteSchematicGenerator(self, OutputSchema.of(schema), schema)

    async def get_embedder(self, hints: Mapping[str, Any] | None = None) -> "RemoteEmbedder":
        return RemoteEmbedder(self)

    async def get_moderation_service(self) -> ModelModeration:
        return ModelModeration(self, self.moderation_categories)

    async def get_tokenizer(self) -> EstimatingTokenizer:
        return CharacterEstimatingTokenizer()

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            if self._client_loop is None or self._client_loop is asyncio.get_running_loop():
                await client.close()

    async def call(self, what: str, request):
        """Awaits an ``openai`` request coroutine, turning the client's errors into RemoteServiceError."""
        import openai

        try:
            return await request
        except openai.APITimeoutError as e:
            raise RemoteServiceError(f"{self.model_id}: {what} timed out ({e})") from e
        except openai.APIConnectionError as e:
            raise RemoteServiceError(f"{self.model_id}: cannot reach {self.client.base_url} ({e})") from e
        except openai.APIStatusError as e:
            raise RemoteServiceError(f"{self.model_id}: {what} failed with HTTP {e.status_code}: {e.message}") from e
        except openai.OpenAIError as e:
            raise RemoteServiceError(f"{self.model_id}: {what} failed: {e}") from e


def _response_format(output: OutputSchema) -> dict:
    schema = output.json_schema
    if schema.get("type") == "object" and schema.get("additionalProperties", True) is True \
            and set(schema) <= {"type", "additionalProperties", "title"}:  # free JSON: dict, Dict[str, Any]
        return {"type": "json_object"}
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", output.name)[:64] or "response"
    return {"type": "json_schema", "json_schema": {"name": name, "schema": output.json_schema, "strict": False}}


class RemoteSchematicGenerator(SchematicGenerator):
    def __init__(self, service: OpenAIRemoteService, output: OutputSchema, schema: Any):
        self.service = service
        self.schema = schema
        self._output = output

    @property
    def id(self) -> str:
        return self.service.model_id

    @property
    def max_tokens(self) -> int:
        return self.service.context_window

    @property
    def tokenizer(self) -> EstimatingTokenizer:
        return CharacterEstimatingTokenizer()

    async def generate(self, prompt: str, hints: Mapping[str, Any] | None = None) -> SchematicGenerationResult:
        """``hints``: ``temperature`` (default 0), ``max_tokens``, ``top_p``, ``seed``."""
        hints = dict(hints or {})
        started = time.perf_counter()
        messages = [{"role": "system", "content": self._output.instruction},
                    {"role": "user", "content": prompt}]
        extra = {k: hints[k] for k in ("max_tokens", "top_p", "seed") if k in hints}
        response = await self.service.call("chat completion", self.service.client.chat.completions.create(
            model=self.service.model_name, messages=messages, temperature=hints.get("temperature", 0.0),
            response_format=_response_format(self._output), **extra))
        if not response.choices or response.choices[0].message.content is None:
            raise RemoteServiceError(f"{self.id}: the answer holds no message content")
        content = self._output.parse(response.choices[0].message.content)
        usage = response.usage
        info = GenerationInfo(self._output.name, self.id, time.perf_counter() - started,
                              UsageInfo(usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0))
        return SchematicGenerationResult(content, info)


class RemoteEmbedder(Embedder):
    def __init__(self, service: OpenAIRemoteService):
        self.service = service
        self._dimensions = _KNOWN_DIMENSIONS.get(service.embedding_model)

    @property
    def id(self) -> str:
        return f"{self.service.provider}/{self.service.embedding_model}"

    @property
    def max_tokens(self) -> int:
        return 8192

    @property
    def tokenizer(self) -> EstimatingTokenizer:
        return CharacterEstimatingTokenizer()

    @property
    def dimensions(self) -> int:
        if self._dimensions is None:
            raise RuntimeError(f"the dimensions of {self.id} are known after the first embed call")
        return self._dimensions

    async def embed(self, texts: Sequence[str], hints: Mapping[str, Any] | None = None) -> EmbeddingResult:
        if isinstance(texts, str):
            raise TypeError("embed takes a list of texts, got one str (wrap it in a list)")
        texts = list(texts)
        if not texts:
            return EmbeddingResult([])
        response = await self.service.call("embedding", self.service.client.embeddings.create(
            model=self.service.embedding_model, input=texts))
        vectors = [list(d.embedding) for d in sorted(response.data, key=lambda d: d.index)]
        if len(vectors) != len(texts):
            raise RemoteServiceError(f"{self.id}: asked for {len(texts)} embeddings, got {len(vectors)}")
        self._dimensions = len(vectors[0])
        return EmbeddingResult(vectors)


__all__ = ["CharacterEstimatingTokenizer", "OpenAIRemoteService", "RemoteServiceError", "split_remote_id"]
