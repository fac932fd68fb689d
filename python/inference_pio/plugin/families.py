"""Model families, read from the installed plugins' manifests (nowhere else lists them).

A family is a manifest's ``model_family`` (``"Llama"``, ``"Qwen"``), keyed in lower case as the
family segment of a model id (``local/qwen/...``); several plugins may share one (Qwen2, Qwen3).
``installed_manager()`` is the process's manager over the default sources, the one that the
model manager's ``ModelType`` and the services ask.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from typing import Iterable

from . import discovery
from .manifest import PluginManifest

GENERATION = "text-generation"
EMBEDDINGS = "embeddings"


@dataclass(frozen=True)
class Family:
    """One model family and what its plugins serve.

    ``key``: the id segment (``"qwen"``); ``name``: an identifier for it (``"QWEN"``, as
    ``ModelType.QWEN``); ``title``: the manifest's spelling (``"Qwen"``); ``plugins``: plugin
    names; ``model_types`` / ``architectures`` / ``capabilities``: the union over its plugins.
    """

    key: str
    name: str
    title: str
    plugins: tuple[str, ...]
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    capabilities: tuple[str, ...]

    @property
    def generates(self) -> bool:
        return GENERATION in self.capabilities


def family_key(manifest: PluginManifest) -> str:
    """The family a manifest declares as an id segment (its plugin name when ``model_family`` is
    empty): ``"Qwen"`` -> ``"qwen"``, ``"Heron Lab"`` -> ``"heron-lab"``."""
    return slug(manifest.model_family or manifest.name)


def slug(text: str) -> str:
    """Lower case, each run of other characters than letters and digits one ``-``."""
    return re.sub(r"[^0-9a-z]+", "-", text.lower()).strip("-")


def family_identifier(key: str) -> str:
    """``"qwen"`` -> ``"QWEN"``, ``"heron-lab"`` -> ``"HERON_LAB"``."""
    return re.sub(r"\W", "_", key).upper()


def families_of(manifests: Iterable[PluginManifest]) -> dict[str, Family]:
    """The families of ``manifests``, in the order their first plugin comes."""
    grouped: dict[str, list[PluginManifest]] = {}
    for manifest in manifests:
        grouped.setdefault(family_key(manifest), []).append(manifest)

    def union(values: Iterable[Iterable[str]]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v for value in values for v in value))

    return {key: Family(key, family_identifier(key), (members[0].model_family or members[0].name).strip(),
                        tuple(m.name for m in members), union(m.model_types for m in members),
                        union(m.architectures for m in members), union(m.capabilities for m in members))
            for key, members in grouped.items()}


_lock = threading.Lock()
_shared: tuple[str, object] | None = None


def installed_manager():
    """The shared ``PluginManager`` over the default sources (built-in, entry points and
    ``INFERENCE_PIO_PLUGIN_PATH``); a new one when that variable has changed since the last call."""
    from .manager import PluginManager  # the manager module imports this one

    global _shared
    path = os.environ.get(discovery.ENV_VAR, "")
    with _lock:
        if _shared is None or _shared[0] != path:
            _shared = (path, PluginManager())
        return _shared[1]
