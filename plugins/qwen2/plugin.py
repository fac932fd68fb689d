"""``Qwen2_Plugin``: loads a Qwen2 checkpoint and serves it through the engine.

Loading, the KV cache, tokenizer and generation are the Llama plugin's; this plugin names the
Qwen2 config and model, and its metadata comes from ``plugin_manifest.json``.
"""

from __future__ import annotations

from pathlib import Path

from inference_pio.plugin.manifest import load_manifest
from inference_pio.plugins.llama import Llama_Plugin

from .config import Qwen2Config
from .model import Qwen2Model


class Qwen2_Plugin(Llama_Plugin):
    """Qwen2 checkpoints (q/k/v biases, tied embeddings) on the paged-KV engine; see ``Llama_Plugin``."""

    config_class = Qwen2Config
    model_class = Qwen2Model

    def __init__(self):
        super().__init__(load_manifest(Path(__file__).with_name("plugin_manifest.json")).to_metadata())


def create_qwen2_plugin() -> Qwen2_Plugin:
    """Factory named in plugin_manifest.json."""
    return Qwen2_Plugin()
