"""``DeepSeek_Plugin``: loads a DeepSeek-V2 / V3 checkpoint and serves it through the engine.

Loading, tokenizer and generation are the Llama plugin's; this plugin names the DeepSeek config
and model and gives the engine a ``LatentKVCache`` (one latent row per token and layer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inference_pio.engine.generate import GenerationEngine
from inference_pio.engine.latent_kv_cache import LatentKVCache
from inference_pio.plugin.manifest import load_manifest
from inference_pio.plugins.llama import Llama_Plugin
from inference_pio.weights import resolve_dtype

from .config import DeepSeekConfig
from .model import DeepSeekModel


class DeepSeek_Plugin(Llama_Plugin):
    """DeepSeek-V2 (-Lite), V2.5 and V3 checkpoints (MLA + MoE) on the paged-KV engine; see ``Llama_Plugin``."""

    config_class = DeepSeekConfig
    model_class = DeepSeekModel

    def __init__(self):
        super().__init__(load_manifest(Path(__file__).with_name("plugin_manifest.json")).to_metadata())

    def load(self, model_path: str | Path | None = None, config: DeepSeekConfig | None = None,
             num_kv_blocks: int | None = None, prefill_budget: int = 512, **overrides: Any) -> None:
        """``Llama_Plugin.load``, then the latent cache in place of the one-block stand-in it built."""
        super().load(model_path, config, num_kv_blocks=1, prefill_budget=prefill_budget, **overrides)
        cfg, model = self.config, self.model
        kv_dtype = (model.embed_tokens.weight.dtype if cfg.kv_cache_dtype == "auto"
                    else resolve_dtype(cfg.kv_cache_dtype))
        if num_kv_blocks is None:  # room for max_batch_size sequences of max_seq_len tokens
            num_kv_blocks = cfg.max_batch_size * -(-cfg.max_seq_len // cfg.kv_block_size)
        self.kv_cache = LatentKVCache(cfg.num_hidden_layers, 1, cfg.latent_dim, num_kv_blocks, cfg.kv_block_size,
                                      kv_dtype, self.kv_cache.device)
        engine = self.engine
        self.engine = GenerationEngine(model, self.kv_cache, max_model_len=engine.max_model_len,
                                       prefill_budget=prefill_budget, tokenizer=self.tokenizer,
                                       eos_token_ids=engine.eos_token_ids)


def create_deepseek_plugin() -> DeepSeek_Plugin:
    """Factory named in plugin_manifest.json."""
    return DeepSeek_Plugin()
