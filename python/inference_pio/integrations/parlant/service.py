"""``ParlantNLPService``: any of our NLP services as a parlant ``NLPService``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from parlant.core.nlp.service import NLPService as ParlantService

from ...services.embedding_choice import with_known_dimensions
from ...services.interface import Embedder, NLPService
from .adapters import (ParlantEmbedderAdapter, ParlantModerationAdapter, ParlantSchematicGeneratorAdapter,
                       ParlantStreamingAdapter, schematic_generator)


class ParlantNLPService(ParlantService):
    """Wraps any :class:`inference_pio.services.NLPService` (local, remote, switcher) for Parlant.

    One embedder is made and shared: Parlant embeds constantly, and a shared embedder keeps one vector
    space (and, behind a switcher, one pinned model). Parlant's server builds its own embedder instances
    from its container; they all wrap that embedder. Their class, a ``ParlantEmbedderAdapter`` subclass,
    is named after the embedding model: Parlant names its vector collections after the embedder's class,
    so another embedding model gets other collections rather than vectors of another space.
    """

    def __init__(self, service: NLPService):
        self.service = service
        self.shared_embedder: Embedder | None = None
        self._embedder_class: type[ParlantEmbedderAdapter] | None = None

    @property
    def supports_streaming(self) -> bool:
        return self.service.supports_streaming

    async def get_streaming_text_generator(self, hints: Mapping[str, Any] = {}) -> ParlantStreamingAdapter:
        """NotImplementedError when the service does not stream (Parlant checks supports_streaming first)."""
        return ParlantStreamingAdapter(await self.service.get_streaming_text_generator(dict(hints)))

    async def get_schematic_generator(self, t: Any, hints: Mapping[str, Any] = {}) -> ParlantSchematicGeneratorAdapter:
        return schematic_generator(await self.service.get_schematic_generator(t, dict(hints)), t)

    async def get_embedder(self, hints: Mapping[str, Any] = {}) -> ParlantEmbedderAdapter:
        if self.shared_embedder is None:
            # Parlant reads `dimensions` when it creates a collection, before it embeds anything.
            self.shared_embedder = await with_known_dimensions(await self.service.get_embedder(dict(hints)))
            name = re.sub(r"\W", "_", f"PioEmbedder_{self.shared_embedder.id}_{self.shared_embedder.dimensions}")
            self._embedder_class = type(name, (ParlantEmbedderAdapter,), {"__module__": __name__})
        return self._embedder_class(self)

    async def get_moderation_service(self) -> ParlantModerationAdapter:
        return ParlantModerationAdapter(await self.service.get_moderation_service())
