"""``Mistral_Plugin``: loads a Mistral checkpoint and serves it through the engine.

Loading, the KV cache, tokenizer and generation are the Llama plugin's; this plugin names the
Mistral config and model, and its metadata comes from ``plugin_manifest.json``.
"""

from __future__ import annotations

from pathlib import Path

from inference_pio.plugin.manifest import load_manifest
from inference_pio.plugins.llama import Llama_Plugin

from .config import MistralConfig
from .model import MistralModel


class Mistral_Plugin(Llama_Plugin):
    """Mistral checkpoints (sliding-window attention) on the paged-KV engine; see ``Llama_Plugin``."""

    config_class = MistralConfig
    model_class = MistralModel

    def __init__(self):
        super().__init__(load_manifest(Path(__file__).with_name("plugin_manifest.json")).to_metadata())


def create_mistral_plugin() -> Mistral_Plugin:
    """Factory named in plugin_manifest.json."""
    return Mistral_Plugin()
