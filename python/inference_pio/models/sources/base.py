"""``FoundModel``: what a source found on disk, before the manager names and catalogues it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidModelError
from ..types import ModelFormat, ModelSource

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$")


@dataclass(frozen=True)
class FoundModel:
    """Checked model files and the facts they state.

    ``architecture``: config.json ``model_type`` or GGUF ``general.architecture`` (family
    detection starts there); ``name``: the catalogue name the source suggests.
    """

    path: Path
    format: ModelFormat
    source: ModelSource
    name: str
    size_bytes: int
    architecture: str | None = None
    parameter_count: int | None = None
    dtype: str | None = None
    quantization: str | None = None
    capabilities: tuple[str, ...] = ("generation",)
    plugin: str | None = None
    owned: bool = False
    origin: str | None = None


def check_model_name(name: str) -> str:
    """A catalogue name: letters, digits and ``._:+-``, no slashes (it is one segment of the id)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidModelError(
            f"model name {name!r} is not usable: use 1-128 letters, digits and . _ : + - "
            "(no slashes or spaces), starting with a letter or digit"
        )
    return name


def name_from(text: str) -> str:
    """A usable catalogue name from a file, folder or repo name (``Org/My Model.gguf`` -> ``My-Model``)."""
    stem = text.rstrip("/").rsplit("/", 1)[-1]
    if stem.lower().endswith(".gguf"):
        stem = stem[: -len(".gguf")]
    cleaned = re.sub(r"[^A-Za-z0-9._:+-]+", "-", stem).strip("-._:+") or "model"
    return cleaned[:128]


def capabilities_for(architecture: str | None, *, causal: bool, chat_template: bool) -> tuple[str, ...]:
    """Encoders embed; decoders generate, embed (mean-pooled hidden states) and chat when they carry a template."""
    if not causal or (architecture or "").lower() in ("bert", "nomic-bert", "roberta", "xlm-roberta"):
        return ("embeddings",)
    return ("generation", "chat", "embeddings") if chat_template else ("generation", "embeddings")


def plugin_for(config: dict[str, Any]) -> str | None:
    """The name of the installed plugin serving a config.json-like dict, or None when none does."""
    from ...plugin import PluginManager
    from ...plugin.errors import NoPluginForModelError

    try:
        return PluginManager().plugin_for_config(config).name
    except NoPluginForModelError:
        return None


def size_on_disk(path: Path) -> int:
    """Bytes of a file, or of every file under a folder (hidden folders such as ``.cache`` skipped)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for item in path.rglob("*"):
        if item.is_file() and not any(part.startswith(".") for part in item.relative_to(path).parts):
            total += item.stat().st_size
    return total
