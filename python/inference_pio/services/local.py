"""NLP services over a local model of the catalogue: ``LlamaService``, ``DeepSeekService``, ``MistralService``,
``QwenService`` (one class, named per family).

::

    service = LlamaService(model_manager=manager, model_id="local/llama/tiny", logger=logger)
    generator = await service.get_schematic_generator(Dict)
    result = await generator.generate("What is the capital of France?")
    vectors = (await (await service.get_embedder()).embed(["What is the capital of France?"])).vectors

The model is loaded once, lazily, in a worker thread (``inference_pio.load``); generation runs on the
model's ``AsyncEngine`` (concurrent requests share its batch), so the event loop never waits on the
model. Output is constrained by the schema's grammar (``structured.py``) and validated again.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import torch

from ..engine.sampler import SamplingParams
from ..models.types import ModelInfo, ModelType
from ..plugin.contract import GenerationPlugin, can_embed, require
from ..plugin.families import installed_manager
from .interface import (EmbeddingResult, Embedder, EstimatingTokenizer, GenerationInfo, NLPService,
                        SchematicGenerationResult, SchematicGenerator, ServiceError, StreamingTextGenerator,
                        TextStream, UsageInfo)
from .context import default_load_options
from .embedding_choice import choose_embedding_model
from .interface import ModerationService
from .moderation import CalibratedModeration, DEFAULT_CATEGORIES, NoModeration, moderation_enabled
from .schemas import OutputSchema
from ..engine.grammar import BudgetTooSmallError, GrammarBackend

_SAMPLING_HINTS = ("temperature", "top_p", "top_k", "min_p", "seed", "repetition_penalty")


class UnknownModelError(LookupError):
    """The model id is not in the catalogue."""


def lookup_model(model_manager, model_id: str) -> ModelInfo:
    """``model_manager.get_model(model_id)`` with a clear error for an unknown id."""
    try:
        info = model_manager.get_model(model_id)
    except (KeyError, LookupError) as e:
        raise UnknownModelError(f"no model {model_id!r} in the catalogue ({e})") from None
    if info is None:
        known = ", ".join(m.id for m in model_manager.list_models()) or "none"
        raise UnknownModelError(f"no model {model_id!r} in the catalogue (installed: {known})")
    return info


class LocalModelService(NLPService):
    """One catalogued model behind the NLP service interface.

    ``load_options`` go to ``inference_pio.load`` (``dtype``, ``max_seq_len``, ``max_batch_size``, ...); without
    ``max_seq_len`` the context is the model's own limit, bounded by memory (``context.py``).
    ``max_tokens``: default output budget of a generation (a ``max_tokens`` hint overrides it); None: what the
    context has left after the prompt.
    ``embedding_model``: what ``get_embedder`` embeds with: ``"auto"`` (a sentence encoder: the catalogue's
    embedding-only model, else the installed all-MiniLM-L6-v2 package; else this model's pooled hidden
    states), ``"self"`` (this model), or a catalogued model id. ``info``: the model, when it is not catalogued.
    """

    family: str | None = None  # set by the named subclasses: the family (ModelType value) they accept

    def __init__(self, model_manager, model_id: str, logger: logging.Logger | None = None, *,
                 max_tokens: int | None = None, moderation_categories: Sequence[str] = DEFAULT_CATEGORIES,
                 embedding_model: str = "auto", moderation: bool | None = None, info: ModelInfo | None = None,
                 **load_options: Any):
        self.info = info if info is not None else lookup_model(model_manager, model_id)
        if self.family is not None and ModelType(self.info.family).value != self.family:
            raise ValueError(f"{type(self).__name__} serves {self.family} models; {model_id!r} is a "
                             f"{ModelType(self.info.family).value} model")
        self.logger = logger or logging.getLogger(__name__)
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens < 1):
            raise ValueError(f"max_tokens must be a positive int or None, got {max_tokens!r}")
        self.max_tokens = max_tokens
        self.model_manager = model_manager
        self.embedding_model = embedding_model
        self._embedding_service: LocalModelService | None = None
        self.moderation = moderation
        self.moderation_categories = tuple(moderation_categories)
        self.load_options = load_options
        self._model = None
        self._load_lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self.info.id

    # ----- the model -----

    async def model(self):
        """The loaded ``inference_pio.Model`` (loaded on first call, in a worker thread)."""
        if self._model is None:
            await asyncio.to_thread(self._load)
        return self._model

    def _load(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            import inference_pio

            self.logger.info("loading %s from %s", self.model_id, self.info.path)
            started = time.perf_counter()
            options = self.load_options
            if "generation" in self.info.capabilities:
                options = default_load_options(self.info.path, options)
            self._model = inference_pio.load(self.info.path, **options)
            self.logger.info("loaded %s in %.1f s", self.model_id, time.perf_counter() - started)

    async def aclose(self) -> None:
        embedding, self._embedding_service = self._embedding_service, None
        if embedding is not None and embedding is not self:
            await embedding.aclose()
        model, self._model = self._model, None
        if model is not None:
            await asyncio.to_thread(model.close)

    # ----- the service getters -----

    async def get_schematic_generator(self, schema: Any, hints: Mapping[str, Any] | None = None
                                      ) -> "LocalSchematicGenerator":
        """A generator of ``schema`` objects; loads the model and compiles the schema's grammar now, so a bad
        schema fails here (``SchemaError``)."""
        output = OutputSchema.of(schema)
        model = await self.model()
        if not model.can_generate:
            raise ServiceError(f"{self.model_id} is an embedding model: it cannot generate")
        backend = await asyncio.to_thread(GrammarBackend.for_model, model)
        await asyncio.to_thread(backend.min_tokens, output)  # compiles the grammar, caches the shortest answer
        return LocalSchematicGenerator(self, model, backend, output, schema)

    async def get_embedder(self, hints: Mapping[str, Any] | None = None) -> "LocalEmbedder":
        service = await self.embedding_service()
        return LocalEmbedder(service, await service.model())

    async def embedding_service(self) -> "LocalModelService":
        """The service whose model embeds for this one (``embedding_model``, chosen on first call)."""
        if self._embedding_service is None:
            choice = choose_embedding_model(self.model_manager, self.info, self.embedding_model)
            if choice.id == self.info.id:
                self._embedding_service = self
            else:
                self._embedding_service = LocalModelService(self.model_manager, choice.id, self.logger, info=choice)
                self.logger.info("%s embeds with %s", self.model_id, choice.id)
        return self._embedding_service

    async def get_moderation_service(self) -> ModerationService:
        """Model moderation when ``moderation`` is True, or None and the model can judge (``moderation.py``)."""
        if not moderation_enabled(self.moderation, self.info.parameter_count):
            return NoModeration()
        return CalibratedModeration(self.label_probabilities, self.moderation_categories)

    async def label_probabilities(self, prompt: str, labels: Sequence[str]) -> list[float]:
        """The softmax of the model's next-token logits (after the chat template over ``prompt``) over ``labels``,
        each of which must be one token."""
        model = await self.model()
        if not model.can_generate:
            raise ServiceError(f"{self.model_id} is an embedding model: it cannot classify")
        token_ids = []
        for label in labels:
            encoded = model.tokenizer.encode(label, add_special_tokens=False)
            if len(encoded) != 1:
                raise ValueError(f"label {label!r} is {len(encoded)} tokens for {self.model_id}; "
                                 "labels must be one token")
            token_ids.append(encoded[0])
        ids = _chat_prompt_ids(model, [{"role": "user", "content": prompt}])
        _budget(model, self.model_id, len(ids), 1)
        captured: list[float] = []

        def capture(output_ids: list[int], logits) -> None:
            if not captured:
                captured.extend(torch.softmax(logits[token_ids].double(), 0).tolist())
            logits.fill_(float("-inf"))
            logits[token_ids[0]] = 0.0

        async for _ in model.async_engine().generate(ids, SamplingParams(temperature=0.0, max_tokens=1,
                                                                         logits_processors=(capture,))):
            pass
        return captured

    async def get_tokenizer(self) -> "LocalTokenizer":
        return LocalTokenizer(await self.model())

    @property
    def supports_streaming(self) -> bool:
        return True

    async def get_streaming_text_generator(self, hints: Mapping[str, Any] | None = None) -> "LocalTextStreamer":
        model = await self.model()
        if not model.can_generate:
            raise ServiceError(f"{self.model_id} is an embedding model: it cannot generate")
        return LocalTextStreamer(self, model)


def _chat_prompt_ids(model, messages: list[dict]) -> list[int]:
    """The chat template over ``messages``; without a template, their contents as plain text."""
    if model.tokenizer.chat_template:
        return model.apply_chat_template(messages)
    return model.tokenize("\n\n".join(m["content"] for m in messages) + "\n")


def _sampling(hints: Mapping[str, Any], budget: int, **extra: Any) -> SamplingParams:
    return SamplingParams(**{"temperature": 0.0, **{k: hints[k] for k in _SAMPLING_HINTS if k in hints}},
                          max_tokens=budget, **extra)


def _budget(model, model_id: str, prompt_len: int, wanted: int) -> int:
    room = model.max_model_len - prompt_len
    if room < 1:
        raise ValueError(f"the prompt takes {prompt_len} tokens and {model_id} holds {model.max_model_len}: "
                         "no room to answer")
    return room if wanted is None else min(int(wanted), room)


class LocalTokenizer(EstimatingTokenizer):
    """Exact counts: the model's own tokenizer (special tokens included, as a prompt would carry them)."""

    def __init__(self, model):
        self._model = model

    async def estimate_token_count(self, prompt: str) -> int:
        return len(self._model.tokenize(prompt))


class LocalSchematicGenerator(SchematicGenerator):
    """Constrained JSON generation of one schema on one loaded model."""

    def __init__(self, service: LocalModelService, model, backend: GrammarBackend, output: OutputSchema, schema: Any):
        self.service = service
        self.schema = schema
        self._model = model
        self._backend = backend
        self._output = output

    @property
    def id(self) -> str:
        return self.service.model_id

    @property
    def max_tokens(self) -> int:
        return self._model.max_model_len

    @property
    def tokenizer(self) -> EstimatingTokenizer:
        return LocalTokenizer(self._model)

    def _prompt_ids(self, prompt: str) -> list[int]:
        instruction = self._output.instruction
        try:
            return _chat_prompt_ids(self._model, [{"role": "system", "content": instruction},
                                                  {"role": "user", "content": prompt}])
        except Exception:  # templates without a system role raise from inside Jinja
            return _chat_prompt_ids(self._model, [{"role": "user", "content": f"{instruction}\n\n{prompt}"}])

    async def generate(self, prompt: str, hints: Mapping[str, Any] | None = None) -> SchematicGenerationResult:
        """``hints``: ``max_tokens`` (output budget, default the service's), ``temperature`` (default 0),
        ``top_p``, ``top_k``, ``min_p``, ``seed``, ``repetition_penalty``."""
        hints = dict(hints or {})
        started = time.perf_counter()
        model = self._model
        ids = self._prompt_ids(prompt)
        budget = _budget(model, self.id, len(ids), hints.get("max_tokens", self.service.max_tokens))
        try:
            processor = self._backend.processor(self._output, max_tokens=budget)
        except BudgetTooSmallError as e:
            raise BudgetTooSmallError(f"{self.id}: {e} (the output budget: max_tokens, or what the context has "
                                      "left after the prompt); raise max_tokens or shorten the prompt") from None
        params = _sampling(hints, budget, logits_processors=(processor,))
        output_ids: list[int] = []
        async for out in model.async_engine().generate(ids, params):
            output_ids += out.token_ids
        if processor.rejected_token is not None:
            raise ServiceError(f"{self.id}: the sampler produced token {processor.rejected_token}, which the "
                               "grammar forbids (another logits edit overrode the mask)")
        text = model.detokenize(output_ids)
        content = self._output.parse(text)
        info = GenerationInfo(self._output.name, self.id, time.perf_counter() - started,
                              UsageInfo(input_tokens=len(ids), output_tokens=len(output_ids)))
        return SchematicGenerationResult(content, info)


class LocalTextStreamer(StreamingTextGenerator):
    """Free text from the chat template over one user message, streamed piece by piece from the async engine."""

    def __init__(self, service: LocalModelService, model):
        self.service = service
        self._model = model

    @property
    def id(self) -> str:
        return self.service.model_id

    @property
    def tokenizer(self) -> EstimatingTokenizer:
        return LocalTokenizer(self._model)

    def generate(self, prompt: str, hints: Mapping[str, Any] | None = None) -> TextStream:
        hints = dict(hints or {})
        model = self._model
        ids = _chat_prompt_ids(model, [{"role": "user", "content": prompt}])
        params = _sampling(hints, _budget(model, self.id, len(ids), hints.get("max_tokens", self.service.max_tokens)))

        async def pieces() -> AsyncIterator[str]:
            started, produced = time.perf_counter(), 0
            async for out in model.async_engine().generate(ids, params):
                produced += len(out.token_ids)
                if out.text:
                    yield out.text
            stream.finish(GenerationInfo("text", self.id, time.perf_counter() - started,
                                         UsageInfo(input_tokens=len(ids), output_tokens=produced)))

        stream = TextStream(pieces())
        return stream


class LocalEmbedder(Embedder):
    """The model's own ``embed`` (sentence-embedding models such as all-MiniLM-L6-v2), or mean-pooled
    normalized final hidden states for causal LMs; batched, in a worker thread."""

    def __init__(self, service: LocalModelService, model):
        self.service = service
        self._model = model
        self._dimensions: int | None = None

    @property
    def id(self) -> str:
        return self.service.model_id

    @property
    def max_tokens(self) -> int:
        return self._model.max_model_len  # the encoder's max_seq_length, or the LM's context

    @property
    def tokenizer(self) -> EstimatingTokenizer:
        return LocalTokenizer(self._model)

    @property
    def dimensions(self) -> int:
        if self._dimensions is None:
            if self._model.is_embedding_model:  # pooling may concatenate modes: the plugin knows the width
                self._dimensions = self._model.embedding_dim
            else:  # pooled hidden states
                self._dimensions = int(require(self._model.plugin, GenerationPlugin).config.hidden_size)
        return self._dimensions

    def _embed_sync(self, texts: list[str]):
        if can_embed(self._model.plugin):
            return self._model.embed(texts)
        from .pooled_embeddings import mean_pooled_embeddings

        return mean_pooled_embeddings(self._model, texts)

    async def embed(self, texts: Sequence[str], hints: Mapping[str, Any] | None = None) -> EmbeddingResult:
        if isinstance(texts, str):
            raise TypeError("embed takes a list of texts, got one str (wrap it in a list)")
        texts = list(texts)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("embed takes a list of str")
        if not texts:
            return EmbeddingResult([])
        vectors = await asyncio.to_thread(self._embed_sync, texts)
        self._dimensions = int(vectors.shape[1])
        return EmbeddingResult(vectors.float().tolist())


class LlamaService(LocalModelService):
    family = "llama"


class DeepSeekService(LocalModelService):
    family = "deepseek"


class MistralService(LocalModelService):
    family = "mistral"


class QwenService(LocalModelService):
    family = "qwen"


# The seed's names for its families; any other generating family gets a class named after it.
_NAMED_SERVICES: dict[str, type[LocalModelService]] = {
    cls.family: cls for cls in (LlamaService, DeepSeekService, MistralService, QwenService)}


class _ServicesByFamily(Mapping):
    """``ModelType`` -> service class, for each family of the installed plugins that generates text
    (read from their manifests on each use, so a plugin added later is served without an edit)."""

    def __init__(self) -> None:
        self._made: dict[str, type[LocalModelService]] = {}
        self._lock = threading.Lock()

    def _keys(self) -> list[str]:
        return [key for key, family in installed_manager().families().items() if family.generates]

    def __iter__(self):
        return iter([ModelType(key) for key in self._keys()])

    def __len__(self) -> int:
        return len(self._keys())

    def __getitem__(self, family) -> type[LocalModelService]:
        key = family.value if isinstance(family, ModelType) else family
        if not isinstance(key, str) or key not in self._keys():
            raise KeyError(family)
        if key in _NAMED_SERVICES:
            return _NAMED_SERVICES[key]
        with self._lock:
            if key not in self._made:
                name = installed_manager().families()[key].title.replace(" ", "") + "Service"
                self._made[key] = type(name, (LocalModelService,), {"family": key, "__module__": __name__})
            return self._made[key]


SERVICE_FOR_FAMILY: Mapping[ModelType, type[LocalModelService]] = _ServicesByFamily()


def local_service(model_manager, model_id: str, logger: logging.Logger | None = None, **options: Any
                  ) -> LocalModelService:
    """The named service class for the model's family (``LocalModelService`` for the others)."""
    info = lookup_model(model_manager, model_id)
    cls = SERVICE_FOR_FAMILY.get(ModelType(info.family), LocalModelService)
    return cls(model_manager, model_id, logger, **options)


__all__ = ["DeepSeekService", "LlamaService", "LocalEmbedder", "LocalModelService", "LocalSchematicGenerator",
           "LocalTokenizer", "MistralService", "QwenService", "UnknownModelError", "local_service", "lookup_model"]
