"""``LocalModelManager``: the catalogue of local models and the four sources that fill it.

::

    manager = LocalModelManager(logger=logging.getLogger("app"))
    await manager.initialize()
    manager.list_models(ModelType.LLAMA)
    model = await manager.download_model(model_name="llama-7b", model_type=ModelType.LLAMA, source="ollama")
    manager.get_model("local/llama/llama-7b")

Disk and network work runs in worker threads (``asyncio.to_thread``); ``list_models`` and
``get_model`` answer from an in-memory copy of the catalogue, loaded by ``initialize()`` and
refreshed after each change this manager makes (``await refresh()`` picks up other processes').
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .catalogue import DATABASE_NAME, Catalogue, model_home
from .download import download_file
from .errors import DownloadError, InvalidModelError, ModelNotFoundError, UnknownSourceError
from .families import detect_family
from .progress import TransferProgress, progress_wanted
from .sources import FoundModel
from .sources.base import check_model_name, name_from
from .sources.custom import describe_custom
from .sources.folder import describe_checkpoint
from .sources.gguf import describe_gguf
from .sources.huggingface import check_repo_id, fetch_huggingface, hub_cache_dir
from .sources.ollama import OllamaName, find_in_store, forget_blob, ollama_store, pull_from_registry
from .types import ModelInfo, ModelSource, ModelType, local_model_id


class LocalModelManager:
    """Downloads, imports, lists and removes local models.

    Args:
        logger: a ``logging.Logger`` (or anything with ``info``/``warning``); None for
            ``logging.getLogger("inference_pio.models")``.
        home: the folder of the catalogue and downloaded models (default ``$INFERENCE_PIO_HOME``
            or ``~/.inference_pio``).
        progress: show progress bars on stderr (None: unless ``INFERENCE_PIO_PROGRESS=0``).
        ollama_registry: base URL of the Ollama-style registry for pulls (default
            ``$INFERENCE_PIO_OLLAMA_REGISTRY`` or https://registry.ollama.ai).
        ollama_store: the local Ollama store to import from (default ``$OLLAMA_MODELS`` or
            ``~/.ollama/models``).
    """

    def __init__(self, logger: Any = None, home: str | Path | None = None, *, progress: bool | None = None,
                 ollama_registry: str | None = None, ollama_store: str | Path | None = None):
        self.logger = logger or logging.getLogger("inference_pio.models")
        self.home = Path(home).expanduser() if home else model_home()
        self.catalogue = Catalogue(self.home / DATABASE_NAME)
        self._progress = progress
        self._ollama_registry = ollama_registry
        self._ollama_store = Path(ollama_store).expanduser() if ollama_store else None
        self._models: dict[str, ModelInfo] | None = None

    @property
    def pulled_ollama_store(self) -> Path:
        """Where registry pulls go: an Ollama-layout store under the home folder."""
        return self.home / "models" / "ollama"

    # Reading --------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Create (or open and upgrade) the catalogue and load it."""
        await asyncio.to_thread(self.catalogue.create)
        await self.refresh()
        self.logger.info(f"model catalogue {self.catalogue.path}: {len(self._models)} model(s)")

    async def refresh(self) -> None:
        """Reload the catalogue (to see what other processes added or removed)."""
        models = await asyncio.to_thread(self.catalogue.all)
        self._models = {m.id: m for m in models}

    def list_models(self, model_type: ModelType | str | None = None) -> list[ModelInfo]:
        """The catalogued models, sorted by id; only one family when ``model_type`` is given."""
        family = _family(model_type) if model_type is not None else None
        return [m for m in self._snapshot().values() if family is None or m.family == family]

    def get_model(self, model_id: str) -> ModelInfo:
        """The model ``model_id`` (``local/<family>/<name>``); ``ModelNotFoundError`` (a ``KeyError``)
        names the id and what the catalogue holds."""
        models = self._snapshot()
        if model_id in models:
            return models[model_id]
        known = ", ".join(sorted(models)) or "none yet"
        raise ModelNotFoundError(f"no model {model_id!r} in the catalogue {self.catalogue.path} "
                                 f"(catalogued: {known})")

    # Adding ---------------------------------------------------------------------------

    async def download_model(self, model_name: str, model_type: ModelType | str | None = None,
                             source: ModelSource | str = ModelSource.HUGGINGFACE, *, name: str | None = None,
                             revision: str | None = None, plugin: str | None = None,
                             sha256: str | None = None) -> ModelInfo:
        """Fetch ``model_name`` from ``source`` and catalogue it; return its ``ModelInfo``.

        ``huggingface``: a repo id (``org/name``), reused from the hub cache when there.
        ``ollama``: ``[namespace/]model[:tag]``, from the local Ollama store when there, else
        pulled from the registry. ``gguf``: a local ``.gguf`` path, or an http(s) URL
        (downloaded with resume; ``sha256`` checked when given). ``custom``: a folder (see
        ``import_path``). ``model_type`` fixes the family (else read from the files); ``name``
        the catalogue name (else from ``model_name``). An id already catalogued is returned
        without fetching anything.
        """
        kind = _source(source)
        family = _family(model_type) if model_type is not None else None
        if name is not None:
            check_model_name(name)
        expected = name or _default_name(kind, model_name)
        if family is not None and expected is not None:
            existing = self._snapshot().get(local_model_id(family, expected))
            if existing is not None:
                return existing
        found = await asyncio.to_thread(self._fetch, kind, model_name, name, revision, plugin, sha256)
        return await self._catalogue(found, family)

    async def import_path(self, path: str | Path, model_type: ModelType | str | None = None,
                          name: str | None = None, *, plugin: str | None = None) -> ModelInfo:
        """Catalogue a local checkpoint folder (config.json + safetensors; with ``plugin``, a custom
        model) or ``.gguf`` file in place: it is referenced, never copied, and ``remove_model``
        leaves it alone."""
        family = _family(model_type) if model_type is not None else None
        if name is not None:
            check_model_name(name)
        found = await asyncio.to_thread(self._describe_path, Path(path).expanduser(), name, plugin)
        return await self._catalogue(found, family)

    # Removing -------------------------------------------------------------------------

    async def remove_model(self, model_id: str) -> ModelInfo:
        """Drop ``model_id`` from the catalogue and delete the files the manager downloaded for it
        (unless another catalogued model uses them); imported files are never deleted."""
        self.get_model(model_id)
        removed = await asyncio.to_thread(self._remove, model_id)
        await self.refresh()
        return removed

    # Internals (worker threads) -------------------------------------------------------

    def _snapshot(self) -> dict[str, ModelInfo]:
        if self._models is None:
            raise RuntimeError("LocalModelManager is not initialized: `await manager.initialize()` first")
        return self._models

    def _progress_bars(self) -> TransferProgress:
        return TransferProgress(progress_wanted(self._progress))

    def _fetch(self, kind: ModelSource, model_name: str, name: str | None, revision: str | None,
               plugin: str | None, sha256: str | None) -> FoundModel:
        with self._progress_bars() as progress:
            if kind is ModelSource.HUGGINGFACE:
                return fetch_huggingface(model_name, revision=revision, name=name, progress=progress)
            if kind is ModelSource.OLLAMA:
                local = find_in_store(model_name, name=name, store=self._ollama_store, progress=progress)
                if local is not None:
                    self.logger.info(f"{model_name}: found in the local Ollama store")
                    return local
                try:
                    return pull_from_registry(model_name, store=self.pulled_ollama_store,
                                              registry=self._ollama_registry, name=name, progress=progress)
                except (DownloadError, ModelNotFoundError) as e:
                    store = self._ollama_store or ollama_store()
                    raise type(e)(f"{e} (and the local Ollama store {store} does not have it)") from e
            if kind is ModelSource.GGUF and urlparse(model_name).scheme in ("http", "https"):
                return self._download_gguf(model_name, name, sha256, progress)
            if kind is ModelSource.GGUF:
                return describe_gguf(Path(model_name).expanduser().resolve(), name=name)
            return describe_custom(Path(model_name).expanduser().resolve(), plugin=plugin, name=name)

    def _download_gguf(self, url: str, name: str | None, sha256: str | None,
                       progress: TransferProgress) -> FoundModel:
        import httpx

        file_name = name_from(urlparse(url).path) + ".gguf"
        dest = self.home / "models" / "gguf" / file_name
        dest.parent.mkdir(parents=True, exist_ok=True)
        with httpx.Client(timeout=60.0, follow_redirects=True) as client:
            download_file(client, url, dest, sha256=sha256, progress=progress)
        try:
            return describe_gguf(dest, owned=True, origin=url, name=name)
        except InvalidModelError:
            dest.unlink(missing_ok=True)
            raise

    def _describe_path(self, path: Path, name: str | None, plugin: str | None) -> FoundModel:
        if not path.exists():
            raise InvalidModelError(f"{path}: no such file or folder")
        if path.is_file():
            return describe_gguf(path.resolve(), name=name)
        if plugin is not None:
            return describe_custom(path.resolve(), plugin=plugin, name=name)
        return describe_checkpoint(path.resolve(), source=ModelSource.HUGGINGFACE, name=name)

    async def _catalogue(self, found: FoundModel, family: ModelType | None) -> ModelInfo:
        family = family or detect_family(found.architecture, name=found.name)
        if family is None:
            self.logger.warning(f"{found.path}: family {found.architecture!r} is not one we know; filed as custom")
            family = ModelType.CUSTOM
        name = check_model_name(found.name)
        info = ModelInfo(
            id=local_model_id(family, name), name=name, family=family, source=found.source, format=found.format,
            path=found.path, size_bytes=found.size_bytes, parameter_count=found.parameter_count,
            dtype=found.dtype, quantization=found.quantization, capabilities=found.capabilities,
            plugin=found.plugin, owned=found.owned, origin=found.origin,
        )
        stored = await asyncio.to_thread(self.catalogue.add, info)
        await self.refresh()
        if stored is info:
            self.logger.info(f"catalogued {info.id} ({info.path})")
        return stored

    def _remove(self, model_id: str) -> ModelInfo:
        removed = self.catalogue.remove(model_id)
        if removed is None:  # another process removed it since our last refresh
            raise ModelNotFoundError(f"no model {model_id!r} in the catalogue {self.catalogue.path} "
                                     "(another process removed it)")
        if not removed.owned or self.catalogue.ids_using(removed.path):
            return removed
        path = Path(removed.path)
        if removed.source is ModelSource.OLLAMA and path.is_relative_to(self.pulled_ollama_store):
            forget_blob(self.pulled_ollama_store, path)
        elif removed.source is ModelSource.HUGGINGFACE and path.is_relative_to(hub_cache_dir()):
            _delete_hub_revision(path)
        elif path.is_relative_to(self.home) and path.is_file():
            path.unlink()
        else:
            self.logger.warning(f"{removed.id}: not deleting {path}, it is outside the manager's folders")
        self.logger.info(f"removed {removed.id}")
        return removed


def _delete_hub_revision(snapshot: Path) -> None:
    from huggingface_hub import scan_cache_dir

    scan_cache_dir(hub_cache_dir()).delete_revisions(snapshot.name).execute()


def _source(source: ModelSource | str) -> ModelSource:
    return _member(ModelSource, source, UnknownSourceError, "model source")


def _family(model_type: ModelType | str) -> ModelType:
    return _member(ModelType, model_type, InvalidModelError, "model type")


def _member(kind, value, error: type[Exception], what: str):
    try:
        return kind(value.value if isinstance(value, kind) else str(value).lower())
    except ValueError:
        known = ", ".join(member.value for member in kind)
        raise error(f"unknown {what} {value!r} (known: {known})") from None


def _default_name(kind: ModelSource, model_name: str) -> str | None:
    """The catalogue name a download will get, when it can be told before fetching."""
    try:
        if kind is ModelSource.HUGGINGFACE:
            return check_repo_id(model_name).rsplit("/", 1)[-1]
        if kind is ModelSource.OLLAMA:
            return OllamaName.parse(model_name).catalogue_name
    except InvalidModelError:
        return None  # the fetch raises the full error
    return None
