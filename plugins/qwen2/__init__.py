"""Qwen2 model plugin: Qwen2 and Qwen2.5 (q/k/v biases, tied embeddings, optional sliding window).

The manifest (plugin_manifest.json) routes ``model_type: qwen2`` / ``Qwen2ForCausalLM`` here.
The decoder is the shared one (inference_pio.layers.decoder), with a biased qkv projection.
"""

from .config import Qwen2Config
from .model import Qwen2Model, create_qwen2_model
from .plugin import Qwen2_Plugin, create_qwen2_plugin

__all__ = ["Qwen2Config", "Qwen2Model", "create_qwen2_model", "Qwen2_Plugin", "create_qwen2_plugin"]
