"""``Qwen3_Plugin``: a Qwen3 checkpoint on the engine.

Loading, the KV cache, tokenizer and generation are ``DecoderPlugin``'s; the model is the shared
``DecoderModel`` built from ``Qwen3Config``; the metadata is ``plugin_manifest.json``'s.
"""

from __future__ import annotations

from inference_pio.plugin.decoder_plugin import DecoderPlugin

from .config import Qwen3Config


class Qwen3_Plugin(DecoderPlugin):
    """Qwen3 checkpoints (q/k RMSNorm, tied or untied head) on the paged-KV engine."""

    config_class = Qwen3Config


def create_qwen3_plugin() -> Qwen3_Plugin:
    """Factory named in plugin_manifest.json."""
    return Qwen3_Plugin()
