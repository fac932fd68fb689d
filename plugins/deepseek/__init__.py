"""DeepSeek model plugin: DeepSeek-V2 (-Lite), V2.5 and V3 (multi-head latent attention + mixture-of-experts).

The manifest (plugin_manifest.json) routes ``model_type: deepseek_v2`` / ``deepseek_v3`` here.
DeepSeek's Llama-architecture checkpoints (DeepSeek LLM, Coder) stay with the Llama plugin.
``attention/`` holds the latent attention, ``mlp/`` the experts and their routers.
"""

from .config import DeepSeekConfig
from .model import DeepSeekModel, create_deepseek_model
from .plugin import DeepSeek_Plugin, create_deepseek_plugin

__all__ = ["DeepSeekConfig", "DeepSeekModel", "create_deepseek_model", "DeepSeek_Plugin", "create_deepseek_plugin"]
