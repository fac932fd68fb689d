"""The Mistral decoder: Llama's (``plugins/llama/model.py``) with every layer's attention windowed.

The window is applied by the attention ops themselves (``prefill_attention`` and
``paged_decode_attention`` take ``sliding_window``), so prompts, chunked prefills and decode steps
past the window read only the last ``sliding_window`` positions. Keys that slid out stay in the
paged cache: memory is still sized for the whole sequence.
"""

from __future__ import annotations

import torch

from inference_pio.plugins.llama import LlamaModel

from .config import MistralConfig


class MistralModel(LlamaModel):
    """``LlamaModel`` with ``config.sliding_window`` set on each layer's ``PagedAttention``."""

    def __init__(self, cfg: MistralConfig, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        super().__init__(cfg, dtype, device)
        for layer, window in zip(self.layers, cfg.layer_sliding_windows):
            layer.self_attn.attn.sliding_window = window


def create_mistral_model(cfg: MistralConfig, dtype: torch.dtype = torch.float32,
                         device: str | torch.device = "cpu") -> MistralModel:
    """A model with meta-device parameters; ``load_weights`` gives them real tensors."""
    return MistralModel(cfg, dtype, device)
