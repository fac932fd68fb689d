"""Qwen3 model plugin: the dense Qwen3 models (per-head q/k RMSNorm before RoPE, no biases, tied or untied head).

The manifest (plugin_manifest.json) routes ``model_type: qwen3`` / ``Qwen3ForCausalLM`` here; the
model is the shared decoder (inference_pio.layers.decoder) with its ``qk_norm`` switch on.
"""

from .config import Qwen3Config
from .plugin import Qwen3_Plugin, create_qwen3_plugin

__all__ = ["Qwen3Config", "Qwen3_Plugin", "create_qwen3_plugin"]
