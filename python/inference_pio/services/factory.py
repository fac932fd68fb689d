"""``NLPServiceFactory``: builds any service by name, or the best one available.

::

    factory = NLPServiceFactory(logger=logger)
    await factory.initialize()
    llama_service = await factory.create_service("llama")
    switcher = await factory.create_service("model_switcher")
    service = await factory.create_default_service()

Names: ``llama``, ``deepseek``, ``mistral``, ``qwen`` (the largest installed model of that family, or the
configured default when it is one), ``openai`` (the configured remote model), ``model_switcher``
(default + fallback). Configuration: see :mod:`inference_pio.services.config`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from ..models.types import ModelType
from .config import ServicesConfig, load_config
from .interface import NLPService
from .local import SERVICE_FOR_FAMILY, UnknownModelError
from .openai_remote import OpenAIRemoteService
from .resolve import build_service, is_local_id
from .switcher import ModelSwitcher

SWITCHER = "model_switcher"
REMOTE = "openai"


class UnknownServiceError(ValueError):
    """``create_service`` was given a name it does not know."""


class NoServiceAvailableError(RuntimeError):
    """Neither an installed local model nor a configured remote server."""


class NLPServiceFactory:
    """``model_manager``: a ready ``LocalModelManager`` (else one is built and initialized by ``initialize``);
    ``config_path`` / ``env``: where configuration comes from (default ``$INFERENCE_PIO_SERVICES_CONFIG`` and
    ``os.environ``)."""

    def __init__(self, logger: logging.Logger | None = None, *, model_manager=None,
                 config_path: str | Path | None = None, env: Mapping[str, str] | None = None):
        self.logger = logger or logging.getLogger(__name__)
        self.model_manager = model_manager
        self._config_path = config_path
        self._env = env
        self.config: ServicesConfig | None = None

    @property
    def service_names(self) -> tuple[str, ...]:
        return (*(f.value for f in SERVICE_FOR_FAMILY), REMOTE, SWITCHER)

    async def initialize(self) -> None:
        self.config = load_config(self._config_path, self._env)
        if self.model_manager is None:
            from ..models import LocalModelManager

            self.model_manager = LocalModelManager(logger=self.logger)
            await self.model_manager.initialize()
        self.logger.info("service factory configured from %s", self.config.source)

    def _require(self) -> ServicesConfig:
        if self.config is None:
            raise RuntimeError("call await factory.initialize() before creating services")
        return self.config

    # ----- what is installed -----

    def best_local_model(self, family: ModelType | None = None) -> str | None:
        """The configured default when it is a local model (of ``family``), else the largest installed
        generation model (of ``family``), else None."""
        config = self._require()
        models = [m for m in self.model_manager.list_models() if "generation" in m.capabilities
                  and (family is None or ModelType(m.family) == family)]
        if config.default_model and is_local_id(config.default_model) \
                and any(m.id == config.default_model for m in models):
            return config.default_model
        return max(models, key=lambda m: (m.size_bytes, m.id)).id if models else None

    # ----- building -----

    async def create_service(self, name: str) -> NLPService:
        config = self._require()
        key = name.strip().lower() if isinstance(name, str) else name
        if key == REMOTE:
            return self._remote(config.openai_model)
        if key == SWITCHER:
            return await self._switcher()
        try:
            family = ModelType(key)
        except ValueError:
            family = None
        if family not in SERVICE_FOR_FAMILY:
            raise UnknownServiceError(f"unknown service {name!r}; known: {', '.join(self.service_names)}")
        model_id = self.best_local_model(family)
        if model_id is None:
            raise UnknownModelError(
                f"no {family.value} model is installed: download or import one (pio models download ..., "
                f"or LocalModelManager.download_model(..., model_type=ModelType.{family.name}))")
        return SERVICE_FOR_FAMILY[family](self.model_manager, model_id, self.logger, **config.local_options())

    async def create_default_service(self) -> NLPService:
        """The configured default, else the best installed local model, else the configured remote one."""
        config = self._require()
        if config.default_model:
            return self._build(config.default_model)
        model_id = self.best_local_model()
        if model_id is not None:
            return self._build(model_id)
        if config.remote_configured:
            return self._remote(config.openai_model)
        raise NoServiceAvailableError(
            "no NLP service is available: install a local model (pio models download <repo> or "
            "LocalModelManager.download_model) or configure a remote one (set OPENAI_API_KEY, or OPENAI_BASE_URL "
            "for an OpenAI-compatible server; INFERENCE_PIO_DEFAULT_MODEL picks the model)")

    def _build(self, model_id: str) -> NLPService:
        config = self._require()
        if not is_local_id(model_id):
            return self._remote(model_id)
        return build_service(model_id, self.model_manager, self.logger, local_options=config.local_options())

    def _remote(self, model_id: str) -> OpenAIRemoteService:
        return OpenAIRemoteService(model_id, logger=self.logger, **self._require().remote_options())

    async def _switcher(self) -> ModelSwitcher:
        config = self._require()
        default = config.default_model or self.best_local_model()
        fallback = config.fallback_model
        if fallback is None and config.remote_configured and (default is None or is_local_id(default)):
            fallback = config.openai_model
        if default is None:
            default, fallback = fallback, None
        if default is None:
            raise NoServiceAvailableError(
                "the model switcher needs a model: install a local one or configure a remote one "
                "(INFERENCE_PIO_DEFAULT_MODEL, OPENAI_API_KEY / OPENAI_BASE_URL)")
        switcher = ModelSwitcher(self.logger, self.model_manager, default, fallback,
                                 local_options=config.local_options(), remote_options=config.remote_options(),
                                 timeout=config.timeout, failure_threshold=config.failure_threshold,
                                 cooldown=config.cooldown, moderation_categories=config.moderation_categories)
        await switcher.initialize()
        return switcher


__all__ = ["NLPServiceFactory", "NoServiceAvailableError", "UnknownServiceError"]
