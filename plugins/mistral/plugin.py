"""``Mistral_Plugin``: a Mistral checkpoint on the engine.

Loading, the KV cache, tokenizer and generation are ``DecoderPlugin``'s; the metadata is
``plugin_manifest.json``'s.
"""

from __future__ import annotations

from inference_pio.plugin.decoder_plugin import DecoderPlugin

from .config import MistralConfig
from .model import MistralModel


class Mistral_Plugin(DecoderPlugin):
    """Mistral checkpoints (sliding-window attention) on the paged-KV engine."""

    config_class = MistralConfig
    model_class = MistralModel


def create_mistral_plugin() -> Mistral_Plugin:
    """Factory named in plugin_manifest.json."""
    return Mistral_Plugin()
