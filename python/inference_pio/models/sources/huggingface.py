"""Hugging Face models: reused from the hub cache when there, else downloaded with
``huggingface_hub.snapshot_download`` into that cache (shared with transformers and friends).

The environment is read at call time, not at import: ``HF_HUB_OFFLINE=1`` means no HTTP at
all (only the cache), ``HF_ENDPOINT`` points at another hub, ``HF_HUB_CACHE`` / ``HF_HOME``
move the cache. Only safetensors weights and the small JSON/tokenizer files are fetched,
never pickle checkpoints. After a download every file is checked against the sizes and LFS
sha256 digests the hub lists; huggingface_hub itself writes ``.incomplete`` files, renames
them when done and resumes them next time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..download import verify_file
from ..errors import DigestMismatchError, DownloadError, InvalidModelError, ModelNotFoundError
from ..progress import TransferProgress
from ..types import ModelSource
from .base import FoundModel
from .folder import describe_checkpoint

ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as huggingface_hub reads it, but read now."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_cache_dir() -> Path:
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "huggingface") / "hub"


def check_repo_id(repo_id: str) -> str:
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise InvalidModelError(f"{repo_id!r} is not a Hugging Face repo id (expected 'org/name')")
    return repo_id


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The hub-cache snapshot folder of ``repo_id`` holding a config.json, or None."""
    from huggingface_hub import scan_cache_dir, try_to_load_from_cache
    from huggingface_hub.errors import CacheNotFound

    cache = hub_cache_dir()
    hit = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache, revision=revision or "main")
    if isinstance(hit, str):
        return Path(hit).parent
    if revision is not None or not cache.is_dir():
        return None
    # No refs/main (a cache written by hand or by another tool): take the newest complete snapshot.
    try:
        repos = scan_cache_dir(cache).repos
    except CacheNotFound:
        return None
    for repo in repos:
        if repo.repo_id == repo_id and repo.repo_type == "model":
            for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
                if (rev.snapshot_path / "config.json").is_file():
                    return rev.snapshot_path
    return None


def fetch_huggingface(repo_id: str, *, revision: str | None = None, name: str | None = None,
                      progress: TransferProgress | None = None) -> FoundModel:
    """The model ``repo_id`` from the cache, or downloaded (``owned``) when online."""
    check_repo_id(repo_id)
    snapshot = cached_snapshot(repo_id, revision)
    if snapshot is not None:
        try:
            return describe_checkpoint(snapshot, source=ModelSource.HUGGINGFACE, origin=repo_id,
                                       name=name or repo_id.rsplit("/", 1)[-1])
        except InvalidModelError:
            if hub_offline():
                raise
            # An incomplete cache entry (say, a file we deleted for a bad digest): let the hub complete it.
    if hub_offline():
        raise ModelNotFoundError(f"{repo_id} is not in the Hugging Face cache {hub_cache_dir()} and "
                                 "HF_HUB_OFFLINE=1 forbids downloading it")
    snapshot = _download(repo_id, revision, progress)
    return describe_checkpoint(snapshot, source=ModelSource.HUGGINGFACE, owned=True, origin=repo_id,
                               name=name or repo_id.rsplit("/", 1)[-1])


def _download(repo_id: str, revision: str | None, progress: TransferProgress | None) -> Path:
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import (HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    # huggingface_hub reads HF_HUB_OFFLINE once, at import; we only get here when it is unset now.
    constants.HF_HUB_OFFLINE = False
    endpoint = os.environ.get("HF_ENDPOINT") or None
    where = endpoint or "huggingface.co"
    try:
        snapshot = Path(snapshot_download(
            repo_id, revision=revision, cache_dir=hub_cache_dir(), endpoint=endpoint,
            allow_patterns=ALLOW_PATTERNS, tqdm_class=None if progress and progress.enabled else _silent_tqdm(),
        ))
        files = [f for f in HfApi(endpoint=endpoint).list_repo_tree(repo_id, revision=snapshot.name, recursive=True)
                 if getattr(f, "size", None) is not None and (snapshot / f.path).is_file()]
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        at = f" at revision {revision!r}" if revision else ""
        raise ModelNotFoundError(f"Hugging Face ({where}) has no model {repo_id!r}{at}") from e
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as e:
        raise DownloadError(f"downloading {repo_id} from {where} failed: {str(e).splitlines()[0]}") from e
    for f in files:
        lfs = getattr(f, "lfs", None)
        try:
            verify_file(snapshot / f.path, size=lfs.size if lfs else f.size, sha256=lfs.sha256 if lfs else None,
                        progress=progress, what=f"{repo_id}/{f.path}")
        except DigestMismatchError:
            # Bad bytes must not be reused from the cache next time: drop the blob and its link.
            (snapshot / f.path).resolve().unlink(missing_ok=True)
            (snapshot / f.path).unlink(missing_ok=True)
            raise
    return snapshot


def _silent_tqdm():
    from tqdm.auto import tqdm

    class SilentTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    return SilentTqdm
