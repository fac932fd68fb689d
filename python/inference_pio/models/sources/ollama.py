"""Ollama models: the local Ollama store, and pulls from an Ollama-style registry over HTTP.

Store layout (``$OLLAMA_MODELS`` or ``~/.ollama/models``)::

    manifests/<registry host>/<namespace>/<model>/<tag>   JSON, schemaVersion 2, layers
    blobs/sha256-<hex>                                    content-addressed layer files

The weights layer (media type ``application/vnd.ollama.image.model``) is a plain GGUF file.
A pull is ``GET /v2/<namespace>/<model>/manifests/<tag>``, then ``GET .../blobs/sha256:<hex>``
per layer, each checked against its size and digest. Pulled models go to our own store
under the manager's home (same layout), never into Ollama's.

Every name and digest is checked before it becomes a path: a manifest whose digest is not
``sha256:<64 hex>``, or a name with ``..`` or slashes in the wrong place, is refused
(``UnsafeManifestError``), so nothing outside the store is read or written.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..download import download_file, verify_file
from ..errors import DownloadError, InvalidModelError, ModelNotFoundError, UnsafeManifestError
from ..progress import TransferProgress
from ..types import ModelSource
from .base import FoundModel
from .gguf import describe_gguf

DEFAULT_REGISTRY = "https://registry.ollama.ai"
REGISTRY_ENV = "INFERENCE_PIO_OLLAMA_REGISTRY"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"
MAX_MANIFEST_BYTES = 1 << 20  # real ones are a few hundred bytes
_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")


@dataclass(frozen=True)
class OllamaName:
    """``[namespace/]model[:tag]``: ``llama3`` is ``library/llama3:latest``."""

    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> "OllamaName":
        rest, _, tag = text.partition(":")
        namespace, _, model = rest.rpartition("/")
        name = cls(namespace or "library", model, tag or "latest")
        for part in (name.namespace, name.model, name.tag):
            if not _COMPONENT.match(part) or ".." in part:
                raise UnsafeManifestError(
                    f"{text!r} is not an Ollama model name ([namespace/]model[:tag], each part letters, "
                    "digits, . _ -); refusing it before it becomes a path in the store")
        return name

    @property
    def catalogue_name(self) -> str:
        """``llama3:8b``; ``user-model:tag`` outside the library namespace (ids allow no slash here)."""
        return self.display.replace("/", "-")

    @property
    def display(self) -> str:
        prefix = "" if self.namespace == "library" else f"{self.namespace}/"
        return f"{prefix}{self.model}" + ("" if self.tag == "latest" else f":{self.tag}")


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str
    size: int

    @property
    def hex(self) -> str:
        return self.digest.split(":", 1)[1]


def ollama_store() -> Path:
    value = os.environ.get("OLLAMA_MODELS")
    return Path(value).expanduser() if value else Path.home() / ".ollama" / "models"


def registry_url(explicit: str | None = None) -> str:
    return (explicit or os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY).rstrip("/")


def manifest_path(store: Path, host: str, name: OllamaName) -> Path:
    return store / "manifests" / host / name.namespace / name.model / name.tag


def blob_path(store: Path, layer: Layer) -> Path:
    return store / "blobs" / f"sha256-{layer.hex}"


def parse_manifest(data: bytes | str, where: str) -> tuple[list[Layer], Layer]:
    """All layers and the weights layer of a manifest; every digest checked before use."""
    try:
        manifest = json.loads(data)
    except ValueError as e:
        raise InvalidModelError(f"{where}: manifest is not JSON ({e})") from e
    if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
        raise InvalidModelError(f"{where}: manifest has no layers list")
    layers = []
    for i, raw in enumerate(manifest["layers"]):
        if not isinstance(raw, dict):
            raise InvalidModelError(f"{where}: layer {i} is not an object")
        digest, size = raw.get("digest"), raw.get("size")
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise UnsafeManifestError(f"{where}: layer {i} digest {digest!r} is not 'sha256:<64 hex digits>'; "
                                      "refusing a manifest that could point outside the store")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidModelError(f"{where}: layer {i} has no valid size ({size!r})")
        layers.append(Layer(str(raw.get("mediaType", "")), digest, size))
    weights = [layer for layer in layers if layer.media_type == MODEL_MEDIA_TYPE]
    if not weights:
        raise InvalidModelError(f"{where}: manifest has no weights layer ({MODEL_MEDIA_TYPE})")
    return layers, weights[0]


def find_in_store(text: str, *, name: str | None = None, store: Path | None = None,
                  progress: TransferProgress | None = None) -> FoundModel | None:
    """The model ``text`` from the local Ollama store (its blob checked against its digest), or
    None when the store has no manifest for it. The blob stays Ollama's (``owned`` False)."""
    store = store or ollama_store()
    parsed = OllamaName.parse(text)
    manifest = manifest_path(store, urlparse(DEFAULT_REGISTRY).netloc, parsed)
    if not manifest.is_file():
        return None
    _, weights = parse_manifest(manifest.read_bytes(), str(manifest))
    blob = blob_path(store, weights)
    if not blob.is_file():
        raise InvalidModelError(f"{manifest}: weights blob {blob.name} is missing from {store / 'blobs'}")
    verify_file(blob, size=weights.size, sha256=weights.hex, progress=progress, what=f"Ollama blob {blob}")
    return describe_gguf(blob, source=ModelSource.OLLAMA, origin=f"ollama:{parsed.display}",
                         name=name or parsed.catalogue_name)


def pull_from_registry(text: str, *, store: Path, registry: str | None = None, name: str | None = None,
                       progress: TransferProgress | None = None, timeout_s: float = 60.0) -> FoundModel:
    """Pull ``text`` from the registry into ``store`` (resuming earlier partial blobs); the manifest
    is written only once every blob is complete and checked, so a half pull is never visible."""
    import httpx

    parsed = OllamaName.parse(text)
    base = registry_url(registry)
    host = urlparse(base).netloc
    if not host:
        raise InvalidModelError(f"Ollama registry URL {base!r} has no host")
    url = f"{base}/v2/{parsed.namespace}/{parsed.model}/manifests/{parsed.tag}"
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        manifest = _get_manifest(client, url, parsed, base)
        layers, weights = parse_manifest(manifest, url)
        blob = blob_path(store, weights)
        had_weights = blob.is_file()
        for layer in layers:
            download_file(client, f"{base}/v2/{parsed.namespace}/{parsed.model}/blobs/{layer.digest}",
                          blob_path(store, layer), size=layer.size, sha256=layer.hex, progress=progress,
                          description=f"{parsed.display} {layer.hex[:12]}")
    try:
        found = describe_gguf(blob, source=ModelSource.OLLAMA, owned=True, origin=f"ollama:{parsed.display}",
                              name=name or parsed.catalogue_name)
    except InvalidModelError:
        if not had_weights:  # its digest matched, but it is no model: do not keep it
            blob.unlink(missing_ok=True)
        raise
    target = manifest_path(store, host, parsed)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    temporary.write_bytes(manifest)
    os.replace(temporary, target)
    return found


def _get_manifest(client, url: str, name: OllamaName, base: str) -> bytes:
    """The manifest's bytes, read no further than ``MAX_MANIFEST_BYTES``."""
    import httpx

    try:
        with client.stream("GET", url, headers={"Accept": MANIFEST_ACCEPT}) as response:
            if response.status_code == 404:
                raise ModelNotFoundError(f"the Ollama registry {base} has no model {name.display!r}")
            if response.status_code != 200:
                raise DownloadError(f"GET {url}: HTTP {response.status_code} {response.reason_phrase}")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > MAX_MANIFEST_BYTES:
                    raise InvalidModelError(f"{url}: more than {MAX_MANIFEST_BYTES} bytes is not an Ollama manifest")
            return bytes(body)
    except httpx.HTTPError as e:
        raise DownloadError(f"GET {url} failed ({type(e).__name__}: {e})") from e


def forget_blob(store: Path, blob: Path) -> list[Path]:
    """Delete the manifests in ``store`` that use ``blob`` and those manifests' blobs that no other
    manifest uses; return the deleted files. (Blobs nobody names are left alone: they may belong
    to a pull in progress in another process.)"""
    manifests = store / "manifests"
    deleted: list[Path] = []
    orphans: set[str] = {blob.name}
    used: set[str] = set()
    for manifest in sorted(p for p in manifests.rglob("*") if p.is_file()) if manifests.is_dir() else ():
        try:
            layers, _ = parse_manifest(manifest.read_bytes(), str(manifest))
        except InvalidModelError:
            continue  # not ours to judge; it keeps nothing alive
        names = {f"sha256-{layer.hex}" for layer in layers}
        if blob.name in names:
            manifest.unlink()
            deleted.append(manifest)
            orphans |= names
        else:
            used |= names
    for name in sorted(orphans - used):
        path = store / "blobs" / name
        if path.is_file():
            path.unlink()
            deleted.append(path)
    return deleted
