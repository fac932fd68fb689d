"""The Qwen2 decoder: the shared one (``inference_pio.layers.decoder``) with biased q/k/v rows and per-layer windows.

Qwen2 puts a bias on the q, k and v projections but none on o_proj (``Qwen2Config.qkv_bias`` /
``o_bias``): the loader stacks the three checkpoint biases into ``qkv_proj``'s like the weights.
Layers that ``Qwen2Config.layer_types`` marks ``sliding_attention`` attend through a window.
"""

from __future__ import annotations

import torch

from inference_pio.layers.decoder import DecoderModel

from .config import Qwen2Config


class Qwen2Model(DecoderModel):
    """``DecoderModel`` built from a ``Qwen2Config``."""


def create_qwen2_model(cfg: Qwen2Config, dtype: torch.dtype = torch.float32,
                       device: str | torch.device = "cpu") -> Qwen2Model:
    """A model with meta-device parameters; ``load_weights`` gives them real tensors."""
    return Qwen2Model(cfg, dtype, device)
