"""The Mistral decoder: the shared one (``inference_pio.layers.decoder``) with every layer's attention windowed.

The window is applied by the attention ops themselves (``prefill_attention`` and
``paged_decode_attention`` take ``sliding_window``), so prompts, chunked prefills and decode steps
past the window read only the last ``sliding_window`` positions. Keys that slid out stay in the
paged cache: memory is still sized for the whole sequence.
"""

from __future__ import annotations

import torch

from inference_pio.layers.decoder import DecoderModel

from .config import MistralConfig


class MistralModel(DecoderModel):
    """``DecoderModel`` whose layers take ``MistralConfig.layer_sliding_windows``."""


def create_mistral_model(cfg: MistralConfig, dtype: torch.dtype = torch.float32,
                         device: str | torch.device = "cpu") -> MistralModel:
    """A model with meta-device parameters; ``load_weights`` gives them real tensors."""
    return MistralModel(cfg, dtype, device)
