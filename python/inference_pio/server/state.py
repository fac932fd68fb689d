"""What one server serves: a generation model (with its async engine) and an optional embedding model."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .errors import APIError
from .logprobs import TokenText


@dataclass
class ServedModel:
    """``model`` is an ``inference_pio.api.Model``; ``engine`` its running async engine (None for embedders)."""

    name: str
    model: object
    engine: object | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    aliases: tuple[str, ...] = ()  # other names requests may use (the path it was served from)
    _token_text: TokenText | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def token_text(self) -> TokenText:
        """Single-token texts for logprobs, cached across requests (the same ids come back all the time)."""
        if self._token_text is None:
            self._token_text = TokenText(self.model.detokenize)
        return self._token_text

    def answers_to(self, name: str) -> bool:
        return name == self.name or name in self.aliases


@dataclass
class ServerState:
    generator: ServedModel | None
    embedder: ServedModel | None = None
    api_key: str | None = None

    def served(self) -> list[ServedModel]:
        return [m for m in (self.generator, self.embedder) if m is not None]

    def generation_model(self, name: str) -> ServedModel:
        if self.generator is not None and self.generator.answers_to(name):
            return self.generator
        raise self._unknown(name, "generation")

    def embedding_model(self, name: str) -> ServedModel:
        if self.embedder is not None and self.embedder.answers_to(name):
            return self.embedder
        raise self._unknown(name, "embedding")

    def _unknown(self, name: str, what: str) -> APIError:
        available = ", ".join(m.name for m in self.served()) or "none"
        return APIError(404, f"the model {name!r} does not exist or does not serve {what} (served: {available})",
                        "not_found_error", "model", "model_not_found")
