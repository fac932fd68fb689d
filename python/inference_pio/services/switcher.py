"""``ModelSwitcher``: an NLP service that routes to a current model and falls back to another.

::

    switcher = ModelSwitcher(logger=logger, model_manager=manager,
                             default_model_id="local/llama/llama-7b", fallback_model_id="openai/gpt-4o")
    await switcher.initialize()
    switcher.set_model("local/deepseek/deepseek-coder-7b")
    models = switcher.list_available_models()
    result = await (await switcher.get_schematic_generator(Dict)).generate("What is the capital of France?")
    switcher.figures()["local/deepseek/deepseek-coder-7b"].latency_p95

Each generation goes to the current model; an error, a timeout (``timeout`` seconds) or a malformed
answer (``None``, the wrong type, content that does not match the schema) there sends it to the fallback,
so a request gets an answer while either model can give one. Every attempt is counted in the model's
figures (:class:`~inference_pio.services.model_health.ModelFigures`). A model that failed
``failure_threshold`` times in a row is skipped for ``cooldown`` seconds (circuit breaker), then tried
again; only when every candidate's breaker is open are they tried anyway, soonest-to-reopen first.

Every call to a model runs in that model's :class:`~inference_pio.services.model_lane.ModelLane` (its own
event loop and at most ``threads_per_model`` worker threads), so a model that hangs, in a coroutine, in
a worker thread or by blocking its event loop, costs the caller its timeout and nothing more: the
fallback's calls never queue behind it.

A default model that is not installed (not in the catalogue) does not stop ``initialize()``: the
switcher logs a warning and starts on the fallback (local when possible, the cloud when necessary).

Embeddings do not fall back after the first answer: vectors of two models live in different spaces, so
the embedder stays with the model that answered first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import pydantic

from ..models.types import ModelInfo, ModelType
from .interface import (EmbeddingResult, Embedder, EstimatingTokenizer, GenerationInfo, ModerationService, NLPService,
                        SchematicGenerationResult, SchematicGenerator, ServiceError)
from .local import UnknownModelError, lookup_model
from .embedding_choice import with_known_dimensions
from .model_health import ModelFigures, ModelHealth
from .model_lane import ModelLane
from .moderation import DEFAULT_CATEGORIES, ModelModeration, NoModeration, moderation_enabled
from .openai_remote import split_remote_id
from .resolve import build_service, is_local_id
from .schemas import OutputSchema


class AllModelsFailedError(ServiceError):
    """Every candidate model failed the request; ``errors`` maps model id -> its error."""

    def __init__(self, errors: Mapping[str, BaseException]):
        self.errors = dict(errors)
        detail = "; ".join(f"{m}: {type(e).__name__}: {e}" for m, e in self.errors.items())
        super().__init__(f"no model could answer ({detail})")


class MalformedResultError(ServiceError):
    """A model answered, but not with a well-formed result: counted as its failure."""


class CircuitOpenError(ServiceError):
    """A model skipped because its circuit breaker is open."""


class ModelSwitcher(NLPService):
    """``services``: ready services by model id (used instead of building one); ``local_options`` /
    ``remote_options``: keyword arguments for the local / remote services it builds."""

    def __init__(self, logger: logging.Logger | None = None, model_manager=None, default_model_id: str | None = None,
                 fallback_model_id: str | None = None, *, services: Mapping[str, NLPService] | None = None,
                 local_options: Mapping[str, Any] | None = None, remote_options: Mapping[str, Any] | None = None,
                 timeout: float | None = 120.0, failure_threshold: int = 3, cooldown: float = 30.0,
                 moderation_categories: Sequence[str] = DEFAULT_CATEGORIES, threads_per_model: int = 4,
                 clock: Callable[[], float] = time.monotonic):
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout}")
        if threads_per_model < 1:
            raise ValueError(f"threads_per_model must be >= 1, got {threads_per_model}")
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
        self._threads_per_model = threads_per_model
        self._lanes: dict[str, ModelLane] = {}
        self._current: str | None = None

    # ----- set-up and choice -----

    async def initialize(self) -> None:
        """Checks the configured ids; without a default, picks the best installed generation model. A default
        that cannot be served (not installed, no manager, nothing installed) falls back, with a warning."""
        if self.fallback_model_id is not None:
            self._check_known(self.fallback_model_id)
        try:
            if self.default_model_id is None:
                self.default_model_id = self.choose_model(("generation",), activate=False)
            self._check_known(self.default_model_id)
        except (UnknownModelError, ValueError) as e:
            if self.fallback_model_id is None:
                raise
            self.logger.warning("the default model cannot be served (%s); using the fallback %s", e,
                                self.fallback_model_id)
            self.default_model_id = self.fallback_model_id
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
        return list(dict.fromkeys(m for m in (self.model_id, self.fallback_model_id) if m is not None))

    def lane(self, model_id: str) -> ModelLane:
        """The event loop and worker threads where every call to ``model_id`` runs."""
        if model_id not in self._lanes:
            self._lanes[model_id] = ModelLane(model_id.replace("/", "-"), self._threads_per_model)
        return self._lanes[model_id]

    async def route(self, attempt: Callable[[NLPService, str], Awaitable[Any]],
                    candidates: Sequence[str] | None = None, tokens: Callable[[Any], int] = lambda _: 0,
                    check: Callable[[Any], None] = lambda _: None) -> Any:
        """Runs ``attempt(service, model_id)`` on each candidate in turn until one succeeds, within the timeout.

        ``check(result)`` raises for a malformed result (a failure of that model, like an error). A candidate
        whose breaker is open is skipped, unless every candidate's is: then they are tried, soonest to reopen
        first.
        """
        errors: dict[str, BaseException] = {}
        order = list(candidates or self._candidates())
        healths = [self.health(m) for m in order]  # every candidate has figures, tried or not
        for model_id, health in zip(order, healths):
            if not health.available():  # (claims the half-open trial when one is due)
                errors[model_id] = CircuitOpenError(f"skipped: its circuit is open ({health.last_error})")
                continue
            answered, result = await self._try(model_id, attempt, check, tokens, errors)
            if answered:
                return result
        if all(isinstance(errors.get(m), CircuitOpenError) for m in order):
            for model_id in sorted(order, key=lambda m: self.health(m).reopens_at):  # every breaker is open
                answered, result = await self._try(model_id, attempt, check, tokens, errors)
                if answered:
                    return result
        raise AllModelsFailedError(errors)

    async def _try(self, model_id: str, attempt, check, tokens, errors: dict) -> tuple[bool, Any]:
        """One attempt on ``model_id`` within the timeout, counted in its figures: ``(answered, result)``."""
        health = self.health(model_id)
        started = time.perf_counter()
        try:
            result, output_tokens = await asyncio.wait_for(
                self.lane(model_id).run(self._attempt(attempt, model_id, check, tokens)), self.timeout)
        except asyncio.CancelledError:
            health.abandon_trial()  # no verdict: a claimed half-open trial must not stay claimed
            raise
        except Exception as e:
            timed_out = isinstance(e, (asyncio.TimeoutError, TimeoutError))
            if timed_out:
                e = TimeoutError(f"no answer within {self.timeout} s")
            health.record_failure(e, timed_out)
            errors[model_id] = e
            self.logger.warning("%s failed (%s: %s)", model_id, type(e).__name__, e)
            return False, None
        health.record_success(time.perf_counter() - started, output_tokens)
        return True, result

    async def _attempt(self, attempt, model_id: str, check, tokens) -> tuple[Any, int]:
        """One try, run in the model's lane: the answer is checked here, so a malformed one fails the try."""
        result = await attempt(await self.service(model_id), model_id)
        try:
            check(result)
            output_tokens = int(tokens(result))
        except MalformedResultError:
            raise
        except Exception as e:  # noqa: BLE001 -- whatever the checks tripped on, the answer is malformed
            raise MalformedResultError(f"{model_id} answered a malformed {type(result).__name__}: {e}") from e
        return result, output_tokens

    # ----- the service getters -----

    async def get_schematic_generator(self, schema: Any, hints: Mapping[str, Any] | None = None
                                      ) -> "SwitchingSchematicGenerator":
        return SwitchingSchematicGenerator(self, schema)

    async def get_embedder(self, hints: Mapping[str, Any] | None = None) -> "SwitchingEmbedder":
        return await SwitchingEmbedder(self).prepare()

    async def get_moderation_service(self) -> ModerationService:
        """A verdict through the switcher (with its fallback); none when the current model is a local one too
        small to judge (``moderation.moderation_enabled``)."""
        info = getattr(await self.service(self.model_id), "info", None)
        if isinstance(info, ModelInfo) and not moderation_enabled(None, info.parameter_count):
            return NoModeration()
        return ModelModeration(self, self.moderation_categories)

    async def get_tokenizer(self) -> EstimatingTokenizer:
        model_id = self.model_id

        async def tokenizer():
            return await (await self.service(model_id)).get_tokenizer()
        return await asyncio.wait_for(self.lane(model_id).run(tokenizer()), self.timeout)

    async def aclose(self) -> None:
        """Closes every service (in its lane, within the timeout: a hung model is left behind), then the lanes."""
        for model_id, service in list(self._services.items()):
            try:
                await asyncio.wait_for(self.lane(model_id).run(service.aclose()), self.timeout)
            except Exception as e:  # noqa: BLE001 -- closing the others matters more
                self.logger.warning("closing %s failed (%s: %s)", model_id, type(e).__name__, e)
        for lane in self._lanes.values():
            lane.close()
        self._lanes.clear()


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

        return await self.switcher.route(attempt, tokens=lambda r: r.info.usage.output_tokens, check=self._check)

    def _check(self, result: Any) -> None:
        """A ``SchematicGenerationResult`` whose content matches the schema and whose usage counts are numbers."""
        if not isinstance(result, SchematicGenerationResult) or not isinstance(result.info, GenerationInfo):
            raise MalformedResultError(f"expected a SchematicGenerationResult, got {type(result).__name__}")
        usage = result.info.usage
        if any(not isinstance(n, int) or n < 0 for n in (usage.input_tokens, usage.output_tokens)):
            raise MalformedResultError(f"token counts must be integers >= 0, got {usage}")
        content = result.content
        expected = self.schema if isinstance(self.schema, type) and issubclass(self.schema, pydantic.BaseModel) \
            else None
        if expected is not None:
            if not isinstance(content, expected):
                raise MalformedResultError(f"expected a {expected.__name__}, got {type(content).__name__}")
        else:
            self._output.parse(json.dumps(content))  # OutputValidationError when it does not match


class SwitchingEmbedder(Embedder):
    """Embeds with the first model that answers (current, else fallback), then stays with it."""

    def __init__(self, switcher: ModelSwitcher):
        self.switcher = switcher
        self._pinned: tuple[str, Embedder] | None = None
        self._prepared: Embedder | None = None

    async def prepare(self) -> "SwitchingEmbedder":
        """Gets the embedder of the first model that can give one (current, else fallback) with its width known,
        so ``dimensions`` answers before the first embed (Parlant reads it when it creates a collection)."""
        async def attempt(service: NLPService, model_id: str) -> Embedder:
            return await with_known_dimensions(await service.get_embedder())

        self._prepared = await self.switcher.route(attempt)
        return self

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
            if self._prepared is None:
                raise RuntimeError("the embedder's dimensions are known after prepare() or its first embed call")
            return self._prepared.dimensions
        return self._pinned[1].dimensions

    async def embed(self, texts: Sequence[str], hints: Mapping[str, Any] | None = None) -> EmbeddingResult:
        async def attempt(service: NLPService, model_id: str) -> EmbeddingResult:
            embedder = self._pinned[1] if self._pinned else await service.get_embedder()
            result = await embedder.embed(texts, hints)
            check(result)  # before pinning: a model that answers garbage is not the one to stay with
            if self._pinned is None:
                self._pinned = (model_id, embedder)
            return result

        def check(result: Any) -> None:
            if not isinstance(result, EmbeddingResult) or len(result.vectors) != len(texts):
                raise MalformedResultError(f"expected an EmbeddingResult of {len(texts)} vectors")
            sizes = {len(v) for v in result.vectors}
            if len(sizes) > 1 or 0 in sizes or not all(math.isfinite(x) for v in result.vectors for x in v):
                raise MalformedResultError("the vectors must be non-empty, of one size, and finite")

        return await self.switcher.route(attempt, [self._pinned[0]] if self._pinned else None)


__all__ = ["AllModelsFailedError", "CircuitOpenError", "MalformedResultError", "ModelSwitcher", "SwitchingEmbedder",
           "SwitchingSchematicGenerator"]
