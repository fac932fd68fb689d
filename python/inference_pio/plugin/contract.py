"""What the layers above a plugin may use of it: the generation and embedding protocols.

``TextModelPluginInterface`` is the seed's lifecycle (initialize, tokenize, cleanup...). What
``inference_pio.Model``, the services and the server reach beyond it is declared here, so a
plugin knows what to provide and a caller asks for a capability instead of probing attributes:

- ``GenerationPlugin``: ``engine`` (the ``GenerationEngine``), ``tokenizer``, ``config`` (with
  ``vocab_size``, ``hidden_size``), ``model`` (the ``nn.Module``) and ``kv_cache``; each is
  ``None`` before ``initialize`` and after ``cleanup``.
- ``EmbeddingPlugin``: ``embed(texts) -> [n, embedding_dim]`` float32, ``embedding_dim``,
  ``max_seq_length``, ``config`` and ``tokenizer``.

The checks read attributes statically (``inspect.getattr_static``): a property that raises while
the plugin is not loaded (Bert's ``embedding_dim``) is declared all the same, and nothing runs.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from .errors import PluginError
from .interface import ModelPluginMetadata


class MissingCapabilityError(PluginError, TypeError):
    """A plugin was asked for something its class does not declare (e.g. ``embed`` of a decoder)."""


@runtime_checkable
class GenerationPlugin(Protocol):
    """A plugin that generates text through a ``GenerationEngine``."""

    metadata: ModelPluginMetadata
    is_loaded: bool
    engine: Any      # engine.GenerationEngine | None
    tokenizer: Any   # tokenizer.Tokenizer | None (a checkpoint may ship none)
    config: Any      # the plugin's BaseConfig subclass: vocab_size, hidden_size, max_seq_len
    model: Any       # torch.nn.Module | None
    kv_cache: Any    # the engine's paged cache | None

    def tokenize(self, text: str, **kwargs: Any) -> list[int]: ...

    def detokenize(self, token_ids: Any, **kwargs: Any) -> str: ...

    def cleanup(self) -> bool: ...


@runtime_checkable
class EmbeddingPlugin(Protocol):
    """A plugin that turns texts into sentence vectors."""

    metadata: ModelPluginMetadata
    is_loaded: bool
    tokenizer: Any
    config: Any      # vocab_size
    embedding_dim: int
    max_seq_length: int

    def embed(self, texts: Sequence[str], batch_size: int = 32) -> Any: ...

    def tokenize(self, text: str, **kwargs: Any) -> list[int]: ...

    def detokenize(self, token_ids: Any, **kwargs: Any) -> str: ...

    def cleanup(self) -> bool: ...


P = TypeVar("P")


def protocol_members(protocol: type) -> tuple[str, ...]:
    """The names a protocol declares (its annotated attributes and its methods), in order."""
    names = list(protocol.__dict__.get("__annotations__", {}))
    names += [n for n, v in protocol.__dict__.items() if callable(v) and not n.startswith("_")]
    return tuple(names)


_MEMBERS = {GenerationPlugin: protocol_members(GenerationPlugin), EmbeddingPlugin: protocol_members(EmbeddingPlugin)}
_CAPABILITY = {GenerationPlugin: "generation", EmbeddingPlugin: "embeddings"}


def missing_members(plugin: object, protocol: type) -> list[str]:
    """The members of ``protocol`` that ``plugin`` lacks (empty: it provides the capability)."""
    members = _MEMBERS.get(protocol) or protocol_members(protocol)
    absent = object()
    return [name for name in members if inspect.getattr_static(plugin, name, absent) is absent]


def provides(plugin: object, protocol: type) -> bool:
    """Whether ``plugin`` declares every member of ``protocol`` (no attribute is evaluated)."""
    return not missing_members(plugin, protocol)


def can_generate(plugin: object) -> bool:
    return provides(plugin, GenerationPlugin)


def can_embed(plugin: object) -> bool:
    return provides(plugin, EmbeddingPlugin)


def require(plugin: object, protocol: type[P]) -> P:
    """``plugin`` as a ``protocol``; ``MissingCapabilityError`` naming what it lacks otherwise."""
    missing = missing_members(plugin, protocol)
    if missing:
        metadata = getattr(plugin, "metadata", None)
        name = getattr(metadata, "name", None) or type(plugin).__name__
        what = _CAPABILITY.get(protocol, protocol.__name__)
        raise MissingCapabilityError(
            f"plugin {name!r} ({type(plugin).__name__}) does not provide {what}: it lacks "
            f"{', '.join(missing)} ({protocol.__name__} in inference_pio.plugin.contract)")
    return plugin  # type: ignore[return-value]
