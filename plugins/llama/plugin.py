"""``Llama_Plugin``: a Llama-architecture checkpoint (safetensors folder or GGUF file) on the engine.

Loading, the KV cache, tokenizer and generation are ``DecoderPlugin``'s; the metadata is
``plugin_manifest.json``'s.
"""

from __future__ import annotations

from inference_pio.plugin.decoder_plugin import DecoderPlugin

from .config import LlamaConfig
from .model import LlamaModel


class Llama_Plugin(DecoderPlugin):
    """Llama, TinyLlama and DeepSeek (Llama architecture) checkpoints on the paged-KV engine."""

    config_class = LlamaConfig
    model_class = LlamaModel


def create_llama_plugin() -> Llama_Plugin:
    """Factory named in plugin_manifest.json."""
    return Llama_Plugin()
