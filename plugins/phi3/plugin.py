"""``Phi3_Plugin``: a Phi-3 checkpoint on the engine.

Loading, the KV cache, tokenizer and generation are ``DecoderPlugin``'s; the model is the shared
``DecoderModel`` built from ``Phi3Config``; the metadata is ``plugin_manifest.json``'s.
"""

from __future__ import annotations

from inference_pio.plugin.decoder_plugin import DecoderPlugin

from .config import Phi3Config


class Phi3_Plugin(DecoderPlugin):
    """Phi-3 family checkpoints (fused qkv / gate_up, LongRoPE, partial rotary) on the paged-KV engine."""

    config_class = Phi3Config


def create_phi3_plugin() -> Phi3_Plugin:
    """Factory named in plugin_manifest.json."""
    return Phi3_Plugin()
