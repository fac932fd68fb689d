"""``Qwen2_Plugin``: a Qwen2 checkpoint on the engine.

Loading, the KV cache, tokenizer and generation are ``DecoderPlugin``'s; the metadata is
``plugin_manifest.json``'s.
"""

from __future__ import annotations

from inference_pio.plugin.decoder_plugin import DecoderPlugin

from .config import Qwen2Config
from .model import Qwen2Model


class Qwen2_Plugin(DecoderPlugin):
    """Qwen2 checkpoints (q/k/v biases, tied embeddings) on the paged-KV engine."""

    config_class = Qwen2Config
    model_class = Qwen2Model


def create_qwen2_plugin() -> Qwen2_Plugin:
    """Factory named in plugin_manifest.json."""
    return Qwen2_Plugin()
