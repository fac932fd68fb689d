"""The Qwen2 decoder: Llama's (``plugins/llama/model.py``) with biased q/k/v rows and per-layer windows.

Qwen2 puts a bias on the q, k and v projections but none on o_proj: the fused ``qkv_proj`` gets a
bias (the loader fuses the three checkpoint biases like the weights), ``o_proj`` keeps none. Layers
that ``Qwen2Config.layer_types`` marks ``sliding_attention`` attend through a window.
"""

from __future__ import annotations

import torch

from inference_pio.layers import Linear
from inference_pio.plugins.llama import LlamaModel

from .config import Qwen2Config


class Qwen2Model(LlamaModel):
    """``LlamaModel`` whose fused qkv projection has a bias and whose windowed layers are set."""

    def __init__(self, cfg: Qwen2Config, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        super().__init__(cfg, dtype, device)
        for layer, window in zip(self.layers, cfg.layer_sliding_windows):
            attn = layer.self_attn
            with torch.device("meta"):  # like every parameter, filled by load_weights
                attn.qkv_proj = Linear(cfg.hidden_size, cfg.q_size + 2 * cfg.kv_size, True, dtype)
            attn.attn.sliding_window = window

    def checkpoint_shapes(self) -> dict[str, tuple[int, ...]]:
        """Llama's tensors plus ``model.layers.N.self_attn.{q,k,v}_proj.bias``."""
        c, shapes = self.config, super().checkpoint_shapes()
        for i in range(c.num_hidden_layers):
            for name, rows in (("q", c.q_size), ("k", c.kv_size), ("v", c.kv_size)):
                shapes[f"model.layers.{i}.self_attn.{name}_proj.bias"] = (rows,)
        return shapes


def create_qwen2_model(cfg: Qwen2Config, dtype: torch.dtype = torch.float32,
                       device: str | torch.device = "cpu") -> Qwen2Model:
    """A model with meta-device parameters; ``load_weights`` gives them real tensors."""
    return Qwen2Model(cfg, dtype, device)
