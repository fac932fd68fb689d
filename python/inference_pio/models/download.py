"""Resumable, checked HTTP downloads and on-disk checks of sizes and sha256 digests.

A download writes ``<dest>-partial`` and renames it to ``dest`` only after its size and
sha256 (when the source gives them) match: a reader never sees a half file under the final
name. An interrupted transfer keeps the partial file and the next call continues it with an
HTTP ``Range`` request. A lock file (in ``.locks`` beside it) serialises two processes fetching the same file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Callable, Iterator

from .errors import DigestMismatchError, DownloadError
from .progress import TransferProgress

CHUNK_BYTES = 1 << 20


def sha256_of(path: Path, advance: Callable[[int], None] = lambda n: None) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
            advance(len(chunk))
    return digest.hexdigest()


def verify_file(path: Path, *, size: int | None = None, sha256: str | None = None,
                progress: TransferProgress | None = None, what: str | None = None) -> None:
    """Raise ``DigestMismatchError`` unless ``path`` has ``size`` bytes and the sha256 hex ``sha256``."""
    what = what or str(path)
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise DigestMismatchError(f"{what}: {actual_size} bytes on disk, the source says {size}")
    if sha256 is not None:
        advance = progress.task(f"checking {path.name[:24]}", actual_size) if progress else (lambda n: None)
        actual = sha256_of(path, advance)
        if actual != sha256.lower():
            raise DigestMismatchError(f"{what}: sha256 is {actual}, the source says {sha256.lower()}")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if needed), held for the ``with`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no cross-process lock, same-process callers still work
            yield
            return
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def download_file(client, url: str, dest: Path, *, size: int | None = None, sha256: str | None = None,
                  progress: TransferProgress | None = None, description: str | None = None) -> Path:
    """Fetch ``url`` into ``dest`` through ``<dest>-partial``, resuming what a previous call left.

    ``client`` is an ``httpx.Client``. Raises ``DownloadError`` for HTTP/connection failures
    (the partial file stays for the next attempt) and ``DigestMismatchError`` when the bytes are
    not those promised (the partial file is deleted: bad bytes must not be resumed).
    """
    import httpx

    partial = dest.with_name(dest.name + "-partial")
    # Lock files live apart and are never deleted: unlinking a lock another process waits on
    # would let a third one take a fresh lock and write the same partial file at the same time.
    with file_lock(dest.parent / ".locks" / f"{dest.name}.lock"):
        if dest.exists():  # another process finished it while we waited, or an earlier run did
            verify_file(dest, size=size, sha256=sha256, progress=progress, what=f"{dest} (from {url})")
            return dest
        offset = partial.stat().st_size if partial.exists() else 0
        if size is not None and offset > size:
            partial.unlink()
            offset = 0
        digest = hashlib.sha256()
        if offset:
            with partial.open("rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    digest.update(chunk)
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with client.stream("GET", url, headers=headers) as response:
                if response.status_code == 416 and size is not None and offset == size:
                    pass  # the partial file already holds everything
                else:
                    if response.status_code not in (200, 206):
                        raise DownloadError(f"GET {url}: HTTP {response.status_code} {response.reason_phrase}")
                    if offset and response.status_code == 200:  # the server ignored Range: start over
                        offset, digest = 0, hashlib.sha256()
                    total = size if size is not None else _total_from(response, offset)
                    advance = (progress.task(description or dest.name, total, completed=offset)
                               if progress else (lambda n: None))
                    with partial.open("r+b" if offset else "wb") as f:
                        f.seek(offset)
                        f.truncate()
                        for chunk in response.iter_bytes():  # as received: a cut keeps every byte it got
                            f.write(chunk)
                            digest.update(chunk)
                            advance(len(chunk))
                        f.flush()
                        os.fsync(f.fileno())
        except httpx.HTTPError as e:
            raise DownloadError(f"GET {url} failed after {partial.stat().st_size if partial.exists() else 0} "
                                f"bytes ({type(e).__name__}: {e}); run the same command again to resume") from e
        actual_size = partial.stat().st_size
        if size is not None and actual_size < size:
            raise DownloadError(f"GET {url} stopped at {actual_size} of {size} bytes; "
                                "run the same command again to resume")
        if size is not None and actual_size > size:
            partial.unlink()
            raise DigestMismatchError(f"{url}: received {actual_size} bytes, the source says {size}")
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            partial.unlink()
            raise DigestMismatchError(f"{url}: sha256 of the received bytes is {digest.hexdigest()}, "
                                      f"the source says {sha256.lower()}; nothing was kept")
        os.replace(partial, dest)
    return dest


def _total_from(response, offset: int) -> int | None:
    length = response.headers.get("content-length")
    return offset + int(length) if length and length.isdigit() else None
