"""The contract every model plugin implements (the plugin guide seed's common interface).

A plugin is a ``TextModelPluginInterface`` subclass described by ``ModelPluginMetadata``;
``PluginManager`` creates it through the factory named in its manifest.
"""

from __future__ import annotations

import enum
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from . import dependencies
from .dependencies import DependencyReport


class PluginType(str, enum.Enum):
    """What part of the system a plugin provides; the manifest stores the member's name."""

    MODEL_COMPONENT = "MODEL_COMPONENT"  # a whole model family (the seed's plugins)
    ATTENTION = "ATTENTION"
    KV_CACHE = "KV_CACHE"
    OPTIMIZATION = "OPTIMIZATION"
    TOKENIZER = "TOKENIZER"


@dataclass
class ModelPluginMetadata:
    """Description of a plugin: the seed's manifest fields plus what the engine needs.

    ``compatibility`` holds ``torch_version``, ``transformers_version`` and
    ``python_version`` (version specifiers such as ``">=2.4"``) and ``min_memory_gb``.
    ``model_types`` / ``architectures`` are the transformers ``model_type`` and
    ``architectures`` strings the plugin serves; ``capabilities`` says what it can do
    (``"text-generation"``, ``"embeddings"``, ``"chat"``, ``"gguf"``...).
    """

    name: str
    version: str
    author: str
    description: str
    plugin_type: PluginType
    dependencies: list[str] = field(default_factory=list)
    compatibility: dict[str, Any] = field(default_factory=dict)
    model_architecture: str = ""
    model_size: str = ""
    required_memory_gb: float = 0.0
    supported_modalities: list[str] = field(default_factory=lambda: ["text"])
    license: str = ""
    tags: list[str] = field(default_factory=list)
    model_family: str = ""
    num_parameters: int = 0
    model_types: list[str] = field(default_factory=list)
    architectures: list[str] = field(default_factory=list)
    capabilities: list[str] = field(default_factory=list)


class TextModelPluginInterface(ABC):
    """Base class of text model plugins.

    Lifecycle: ``initialize(**kwargs)`` prepares the plugin (returns ``False`` on failure
    rather than raising), ``load_model(config)`` gives the ``nn.Module``,
    ``tokenize``/``detokenize``/``generate_text``/``infer`` use it, ``cleanup()`` frees it.
    ``is_loaded`` says whether ``initialize`` succeeded and ``cleanup`` has not run since.
    """

    def __init__(self, metadata: ModelPluginMetadata):
        self.metadata = metadata
        self.is_loaded = False

    @abstractmethod
    def initialize(self, **kwargs: Any) -> bool:
        """Prepare the plugin (config, model, tokenizer); ``True`` on success."""

    @abstractmethod
    def load_model(self, config: Any = None) -> Any:
        """Return the model (an ``nn.Module``), building it from ``config`` when given."""

    @abstractmethod
    def infer(self, data: Any) -> Any:
        """Run the model on ``data`` (plugin-defined input, e.g. token ids or a prompt)."""

    @abstractmethod
    def supports_config(self, config: Any) -> bool:
        """Whether this plugin can serve ``config`` (its own config class or a config.json dict)."""

    @abstractmethod
    def tokenize(self, text: str, **kwargs: Any) -> Any:
        """Turn ``text`` into token ids."""

    @abstractmethod
    def detokenize(self, token_ids: Any, **kwargs: Any) -> str:
        """Turn token ids back into text."""

    @abstractmethod
    def generate_text(self, prompt: str, max_new_tokens: int = 512, **kwargs: Any) -> str:
        """Generate up to ``max_new_tokens`` tokens after ``prompt`` and return the new text."""

    @abstractmethod
    def cleanup(self) -> bool:
        """Release the model and caches; ``True`` on success."""

    def install(self, run_pip: bool = False, raise_on_unmet: bool = False) -> DependencyReport:
        """Check the plugin's dependencies; install the missing ones only when asked.

        Returns a ``DependencyReport`` listing what is missing or at the wrong version and
        the exact pip command that installs it. pip runs (``sys.executable -m pip install``)
        only with ``run_pip=True``; the report returned is then the check made afterwards.
        ``raise_on_unmet=True`` raises ``MissingDependencyError`` when something is still unmet.
        """
        name, requirements = self.metadata.name, self.metadata.dependencies
        report = dependencies.check_dependencies(name, requirements)
        if run_pip and not report.ok:
            dependencies.run_pip(report)
            report = dependencies.check_dependencies(name, requirements)
        if raise_on_unmet:
            report.raise_if_unmet()
        return report


class CheckpointPlugin(TextModelPluginInterface):
    """A plugin that serves one loaded checkpoint: ``initialize(**kwargs)`` runs ``load(**kwargs)``
    and reports failure by value (the exception stays in ``init_error``, everything loaded so far is
    released); ``supports_config`` accepts ``config_class`` instances and config.json dicts whose
    ``model_type`` / ``architectures`` the manifest lists."""

    config_class: type | None = None

    def __init__(self, metadata: ModelPluginMetadata):
        super().__init__(metadata)
        self.init_error: Exception | None = None

    @abstractmethod
    def load(self, **kwargs: Any) -> None:
        """Like ``initialize`` but raises (ConfigError, WeightLoadError, ...) on failure."""

    def initialize(self, **kwargs: Any) -> bool:
        try:
            self.load(**kwargs)
            return True
        except Exception as exc:  # the interface reports failure by value; the cause stays inspectable
            logging.getLogger(type(self).__module__).error("%s plugin failed to initialize: %s",
                                                           self.metadata.name, exc)
            self.init_error = exc
            self.cleanup()
            return False

    def supports_config(self, config: Any) -> bool:
        if self.config_class is not None and isinstance(config, self.config_class):
            return True
        if isinstance(config, dict):
            return (config.get("model_type") in self.metadata.model_types
                    or any(a in self.metadata.architectures for a in config.get("architectures") or []))
        return False
