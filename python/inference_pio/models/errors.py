"""The model manager's exceptions: each names the model, file or source at fault.

``ModelNotFoundError`` is a ``KeyError`` (a missing catalogue key) and the bad-input errors
are ``ValueError``s, so callers can catch the built-in kinds; ``str()`` is the plain message.
"""

from __future__ import annotations

from ..errors import InferencePioError


class ModelManagerError(InferencePioError):
    """Base class of every error the model manager raises on purpose."""

    def __str__(self) -> str:  # KeyError would quote the message; keep it readable
        return str(self.args[0]) if self.args else type(self).__name__


class ModelNotFoundError(ModelManagerError, KeyError):
    """An id that is not in the catalogue, or a model a source does not have."""


class ModelExistsError(ModelManagerError, ValueError):
    """A catalogue id already taken by a different model."""


class UnknownSourceError(ModelManagerError, ValueError):
    """A source name other than huggingface, gguf, ollama or custom."""


class InvalidModelError(ModelManagerError, ValueError):
    """Files that are not a usable model: corrupt GGUF, missing config.json or weights, bad names."""


class UnsafeManifestError(InvalidModelError):
    """A manifest or name that would make us read or write outside the store (path traversal)."""


class DigestMismatchError(ModelManagerError, ValueError):
    """Downloaded or stored bytes whose size or sha256 is not the one the source promised."""


class DownloadError(ModelManagerError, OSError):
    """A transfer that failed: HTTP errors, refused connections, a server that cut the stream."""
