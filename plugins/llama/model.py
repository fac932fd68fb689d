"""The Llama decoder: the shared one (``inference_pio.layers.decoder``) with Llama's checkpoint layout."""

from __future__ import annotations

import torch

from inference_pio.layers.decoder import DecoderModel

from .config import LlamaConfig


class LlamaModel(DecoderModel):
    """``DecoderModel`` under the name transformers users know (module names as transformers' Llama)."""


def create_llama_model(cfg: LlamaConfig, dtype: torch.dtype = torch.float32,
                       device: str | torch.device = "cpu") -> LlamaModel:
    """A model with meta-device parameters; ``load_weights`` gives them real tensors."""
    return LlamaModel(cfg, dtype, device)
