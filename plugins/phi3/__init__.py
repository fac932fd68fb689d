"""Phi-3 model plugin: Phi-3, Phi-3.5 and Phi-4-mini (``Phi3ForCausalLM``).

The manifest (plugin_manifest.json) routes ``model_type: phi3`` here. The model is the shared
decoder (inference_pio.layers.decoder); the checkpoint already stores qkv and gate_up fused, and
RoPE may be LongRoPE and/or partial, all read from config.json by ``Phi3Config``.
"""

from .config import Phi3Config
from .plugin import Phi3_Plugin, create_phi3_plugin

__all__ = ["Phi3Config", "Phi3_Plugin", "create_phi3_plugin"]
