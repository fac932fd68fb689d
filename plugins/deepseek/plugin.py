"""``DeepSeek_Plugin``: loads a DeepSeek-V2 / V3 checkpoint and serves it through the engine.

Loading, tokenizer and generation are the Llama plugin's; this plugin names the DeepSeek config
and model and gives the engine a ``LatentKVCache`` (one latent row per token and layer).
"""

from __future__ import annotations

from pathlib import Path
from inference_pio.engine.latent_kv_cache import LatentKVCache
from inference_pio.plugin.manifest import load_manifest
from inference_pio.plugins.llama import Llama_Plugin

from .config import DeepSeekConfig
from .model import DeepSeekModel


class DeepSeek_Plugin(Llama_Plugin):
    """DeepSeek-V2 (-Lite), V2.5 and V3 checkpoints (MLA + MoE) on the paged-KV engine; see ``Llama_Plugin``."""

    config_class = DeepSeekConfig
    model_class = DeepSeekModel
    kv_cache_class = LatentKVCache  # one latent row (rope key + c_kv) per token and layer

    def __init__(self):
        super().__init__(load_manifest(Path(__file__).with_name("plugin_manifest.json")).to_metadata())


def create_deepseek_plugin() -> DeepSeek_Plugin:
    """Factory named in plugin_manifest.json."""
    return DeepSeek_Plugin()
