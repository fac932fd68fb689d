"""``ModelSwitcher``: an NLP service that routes to a current model and falls back to another.

::

    switcher = ModelSwitcher(logger=logger, model_manager=manager,
                             default_model_id="local/llama/llama-7b", fallback_model_id="openai/gpt-4o")
    await switcher.initialize()
    switcher.set_model("local/deepseek/deepseek-coder-7b")
    models = switcher.list_available_models()
    result = await (await switcher.get_schematic_generator(Dict)).generate("What is the capital of France?")
    switcher.figures()["local/deepseek/deepseek-coder-7b"].latency_p95

Each generation goes to the current model; an error or a timeout (``timeout`` seconds) there sends it to
the fallback, so a request gets an answer while either model can give one. Every attempt is counted in
the model's figures (:class:`~inference_pio.services.model_health.ModelFigures`). A model that failed
``failure_threshold`` times in a row is skipped for ``cooldown`` seconds (circuit breaker), then tried
again; when every candidate's breaker is open they are still tried, soonest-to-reopen first.

Embeddings do not fall back after the first answer: vectors of two models live in different spaces, so
the embedder stays with the model that answered first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ..models.types import ModelType
from .interface import (EmbeddingResult, Embedder, EstimatingTokenizer, NLPService, SchematicGenerationResult,
                        SchematicGenerator, ServiceError)
from .local import UnknownModelError, lookup_model
from .model_health import ModelFigures, ModelHealth
from .moderation import DEFAULT_CATEGORIES, ModelModeration
from .openai_remote import split_remote_id
from .resolve import build_service, is_local_id
from .schemas import OutputSchema


class AllModelsFailedError(ServiceError):
    """Every candidate model failed the request; ``errors`` maps model id -> its error."""

    def __init__(self, errors: Mapping[str, BaseException]):
        self.errors = dict(errors)
        detail = "; ".join(f"{m}: {type(e).__name__}: {e}" for m, e in self.errors.items())
        super().__init__(f"no model could answer ({detail})")


class ModelSwitcher(NLPService):
    """``services``: ready services by model id (used instead of building one); ``local_options`` /
    ``remote_options``: keyword arguments for the local / remote services it builds."""

    def __init__(self, logger: logging.Logger | None = None, model_manager=None, default_model_id: str | None = None,
                 fallback_model_id: str | None = None, *, services: Mapping[str, NLPService] | None = None,
                 local_options: Mapping[str, Any] | None = None, remote_options: Mapping[str, Any] | None = None,
                 timeout: float | None = 120.0, failure_threshold: int = 3, cooldown: float = 30.0,
                 moderation_categories: Sequence[str] = DEFAULT_CATEGORIES,
                 clock: Callable[[], float] = time.monotonic):
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout}")
        self.logger = logger or logging.getLogger(__name__)
        self.model_manager = model_manager
        self.default_model_id = default_model_id
        self.fallback_model_id = fallback_model_id
        self.timeout = timeout
        self.moderation_categories = tuple(moderation_categories)
        self._services: dict[str, NLPService] = dict(services or {})
        self._local_options = dict(local_options or {})
        self._remote_options = dict(remote_options or {})
        self._health_options = {"failure_threshold": failure_threshold, "cooldown": cooldown, "clock": clock}
        self._health: dict[str, ModelHealth] = {}
        self._current: str | None = None

    # ----- set-up and choice -----

    async def initialize(self) -> None:
        """Checks the configured ids; without a default, picks the best installed generation model."""
        if self.default_model_id is None:
            self.default_model_id = self.choose_model(("generation",), activate=False)
        self._check_known(self.default_model_id)
        if self.fallback_model_id is not None:
            self._check_known(self.fallback_model_id)
        if self._current is None:
            self._current = self.default_model_id

    def _check_known(self, model_id: str) -> None:
        if model_id in self._services:
            return
        if is_local_id(model_id):
            if self.model_manager is None:
                raise UnknownModelError(f"{model_id} is a local model id and the switcher has no model manager")
            lookup_model(self.model_manager, model_id)
        else:
            split_remote_id(model_id)

    @property
    def model_id(self) -> str:
        if self._current is None:
            if self.default_model_id is None:
                raise RuntimeError("the switcher has no model yet: call await switcher.initialize() first")
            self._current = self.default_model_id
        return self._current

    @property
    def current_model_id(self) -> str:
        return self.model_id

    def set_model(self, model_id: str) -> None:
        """Makes ``model_id`` the current model (UnknownModelError / ValueError for an id it cannot serve)."""
        self._check_known(model_id)
        self._current = model_id
        self.logger.info("switched to %s", model_id)

    def list_available_models(self) -> list[str]:
        """Catalogued local models, then the remote ones the switcher was given."""
        ids = [m.id for m in self.model_manager.list_models()] if self.model_manager is not None else []
        for model_id in (*self._services, self.default_model_id, self.fallback_model_id):
            if model_id is not None and model_id not in ids:
                ids.append(model_id)
        return ids

    def choose_model(self, capabilities: Sequence[str] = ("generation",), memory_budget_bytes: int | None = None,
                     *, family: ModelType | str | None = None, activate: bool = True) -> str:
        """The largest catalogued model that has every capability and fits ``memory_budget_bytes`` (its size
        on disk, a lower bound of what loading takes); becomes current unless ``activate=False``."""
        if self.model_manager is None:
            raise UnknownModelError("choosing a model needs a model manager")
        wanted = set(capabilities)
        fits = [m for m in self.model_manager.list_models()
                if wanted <= set(m.capabilities)
                and (memory_budget_bytes is None or m.size_bytes <= memory_budget_bytes)
                and (family is None or ModelType(m.family) == ModelType(family))]
        if not fits:
            budget = "" if memory_budget_bytes is None else f" within {memory_budget_bytes / 2**30:.2f} GiB"
            raise UnknownModelError(f"no installed model has {sorted(wanted)}{budget}"
                                    + (f" in family {ModelType(family).value}" if family else ""))
        best = max(fits, key=lambda m: (m.size_bytes, m.id)).id
        if activate:
            self.set_model(best)
        return best

    # ----- figures -----

    def health(self, model_id: str) -> ModelHealth:
        if model_id not in self._health:
            self._health[model_id] = ModelHealth(model_id, **self._health_options)
        return self._health[model_id]

    def figures(self) -> dict[str, ModelFigures]:
        """Live figures of every model the switcher has routed to."""
        return {model_id: h.figures() for model_id, h in self._health.items()}

    # ----- routing -----

    async def service(self, model_id: str) -> NLPService:
        """The (cached) service of ``model_id``."""
        if model_id not in self._services:
            self._services[model_id] = build_service(model_id, self.model_manager, self.logger,
                                                     local_options=self._local_options,
                                                     remote_options=self._remote_options)
        return self._services[model_id]

    def _candidates(self) -> list[str]:
        ids = list(dict.fromkeys(m for m in (self.model_id, self.fallback_model_id) if m is not None))
        ready = [m for m in ids if self.health(m).available()]
        waiting = sorted((m for m in ids if m not in ready), key=lambda m: self.health(m).reopens_at)
        return ready + waiting

    async def route(self, attempt: Callable[[NLPService, str], Awaitable[Any]],
                    candidates: Sequence[str] | None = None, tokens: Callable[[Any], int] = lambda _: 0) -> Any:
        """Runs ``attempt(service, model_id)`` on each candidate in turn until one succeeds, within the timeout."""
        errors: dict[str, BaseException] = {}
        order = list(candidates or self._candidates())
        for model_id in order:
            health = self.health(model_id)
            started = time.perf_counter()
            try:
                result = await asyncio.wait_for(self._attempt(attempt, model_id), self.timeout)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                timed_out = isinstance(e, (asyncio.TimeoutError, TimeoutError))
                if timed_out:
                    e = TimeoutError(f"no answer within {self.timeout} s")
                health.record_failure(e, timed_out)
                errors[model_id] = e
                self.logger.warning("%s failed (%s: %s)%s", model_id, type(e).__name__, e,
                                    "" if model_id == order[-1] else "; trying the next model")
                continue
            health.record_success(time.perf_counter() - started, tokens(result))
            return result
        raise AllModelsFailedError(errors)

    async def _attempt(self, attempt, model_id: str):
        return await attempt(await self.service(model_id), model_id)

    # ----- the service getters -----

    async def get_schematic_generator(self, schema: Any, hints: Mapping[str, Any] | None = None
                                      ) -> "SwitchingSchematicGenerator":
        return SwitchingSchematicGenerator(self, schema)

    async def get_embedder(self, hints: Mapping[str, Any] | None = None) -> "SwitchingEmbedder":
        return SwitchingEmbedder(self)

    async def get_moderation_service(self) -> ModelModeration:
        return ModelModeration(self, self.moderation_categories)

    async def get_tokenizer(self) -> EstimatingTokenizer:
        return await (await self.service(self.model_id)).get_tokenizer()

    async def aclose(self) -> None:
        for service in self._services.values():
            await service.aclose()


class SwitchingSchematicGenerator(SchematicGenerator):
    """Generates with the switcher's current model, else its fallback; ``info.model`` says which answered."""

    def __init__(self, switcher: ModelSwitcher, schema: Any):
        self.switcher = switcher
        self.schema = schema
        self._output = OutputSchema.of(schema)  # a bad schema fails here, not on every model in turn
        self._generators: dict[str, SchematicGenerator] = {}

    @property
    def id(self) -> str:
        return self.switcher.model_id

    @property
    def max_tokens(self) -> int:
        generator = self._generators.get(self.switcher.model_id)
        return generator.max_tokens if generator is not None else min((g.max_tokens for g in self._generators.values()),
                                                                      default=4096)

    @property
    def tokenizer(self) -> EstimatingTokenizer:
        generator = self._generators.get(self.switcher.model_id) or next(iter(self._generators.values()), None)
        if generator is None:
            from .openai_remote import CharacterEstimatingTokenizer

            return CharacterEstimatingTokenizer()
        return generator.tokenizer

    async def generate(self, prompt: str, hints: Mapping[str, Any] | None = None) -> SchematicGenerationResult:
        async def attempt(service: NLPService, model_id: str) -> SchematicGenerationResult:
            if model_id not in self._generators:
                self._generators[model_id] = await service.get_schematic_generator(self._output)
            return await self._generators[model_id].generate(prompt, hints)

        return await self.switcher.route(attempt, tokens=lambda r: r.info.usage.output_tokens)


class SwitchingEmbedder(Embedder):
    """Embeds with the first model that answers (current, else fallback), then stays with it."""

    def __init__(self, switcher: ModelSwitcher):
        self.switcher = switcher
        self._pinned: tuple[str, Embedder] | None = None

    @property
    def id(self) -> str:
        return self._pinned[1].id if self._pinned else self.switcher.model_id

    @property
    def max_tokens(self) -> int:
        return self._pinned[1].max_tokens if self._pinned else 512

    @property
    def tokenizer(self) -> EstimatingTokenizer:
        if self._pinned:
            return self._pinned[1].tokenizer
        from .openai_remote import CharacterEstimatingTokenizer

        return CharacterEstimatingTokenizer()

    @property
    def dimensions(self) -> int:
        if self._pinned is None:
            raise RuntimeError("the embedder's dimensions are known after its first embed call")
        return self._pinned[1].dimensions

    async def embed(self, texts: Sequence[str], hints: Mapping[str, Any] | None = None) -> EmbeddingResult:
        async def attempt(service: NLPService, model_id: str) -> EmbeddingResult:
            embedder = self._pinned[1] if self._pinned else await service.get_embedder()
            result = await embedder.embed(texts, hints)
            if self._pinned is None:
                self._pinned = (model_id, embedder)
            return result

        return await self.switcher.route(attempt, [self._pinned[0]] if self._pinned else None)


__all__ = ["AllModelsFailedError", "ModelSwitcher", "SwitchingEmbedder", "SwitchingSchematicGenerator"]
