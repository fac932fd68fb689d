"""Llama model plugin: Llama 2/3, TinyLlama and DeepSeek's Llama-architecture checkpoints.

The manifest (plugin_manifest.json) routes ``model_type: llama`` / ``LlamaForCausalLM`` here.
"""

from .config import LlamaConfig
from .model import LlamaModel, create_llama_model
from .plugin import Llama_Plugin, create_llama_plugin

__all__ = ["LlamaConfig", "LlamaModel", "create_llama_model", "Llama_Plugin", "create_llama_plugin"]
