"""Where local models come from: Hugging Face (hub cache, downloads, local folders), GGUF files,
the Ollama store and registry, and custom folders. Each module turns its source into a
``FoundModel``; the manager names it and writes it to the catalogue."""

from .base import FoundModel

__all__ = ["FoundModel"]
