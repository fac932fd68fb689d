"""Mistral model plugin: Mistral 7B and its dense successors, sliding-window attention included.

The manifest (plugin_manifest.json) routes ``model_type: mistral`` / ``MistralForCausalLM`` here.
The decoder is the shared one (inference_pio.layers.decoder), configured with the window.
"""

from .config import MistralConfig
from .model import MistralModel, create_mistral_model
from .plugin import Mistral_Plugin, create_mistral_plugin

__all__ = ["MistralConfig", "MistralModel", "create_mistral_model", "Mistral_Plugin", "create_mistral_plugin"]
