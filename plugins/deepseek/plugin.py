"""``DeepSeek_Plugin``: loads a DeepSeek-V2 / V3 checkpoint and serves it through the engine.

Loading, tokenizer and generation are ``DecoderPlugin``'s; this plugin names the DeepSeek config
and model and gives the engine a ``LatentKVCache`` (one latent row per token and layer). The
metadata is ``plugin_manifest.json``'s.
"""

from __future__ import annotations

from inference_pio.engine.latent_kv_cache import LatentKVCache
from inference_pio.plugin.decoder_plugin import DecoderPlugin

from .config import DeepSeekConfig
from .model import DeepSeekModel


class DeepSeek_Plugin(DecoderPlugin):
    """DeepSeek-V2 (-Lite), V2.5 and V3 checkpoints (MLA + MoE) on the paged-KV engine; see ``DecoderPlugin``."""

    config_class = DeepSeekConfig
    model_class = DeepSeekModel
    kv_cache_class = LatentKVCache  # one latent row (rope key + c_kv) per token and layer


def create_deepseek_plugin() -> DeepSeek_Plugin:
    """Factory named in plugin_manifest.json."""
    return DeepSeek_Plugin()
