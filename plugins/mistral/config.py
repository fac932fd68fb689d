"""``MistralConfig``: the shared decoder's fields plus a sliding attention window, from config.json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from inference_pio.plugin import ConfigError
from inference_pio.plugin.decoder_config import DecoderConfig


@dataclass(kw_only=True)
class MistralConfig(DecoderConfig):
    """Mistral 7B and its dense successors (``model_type: mistral``; not the Mixtral MoE).

    ``sliding_window``: each token attends to itself and the ``sliding_window - 1`` tokens before
    it, in every layer; ``None`` (Mistral v0.2 and later write ``null``) attends to everything.
    The default 4096 is transformers' ``MistralConfig`` default, for a config.json without the key.
    """

    sliding_window: int | None = 4096

    # llama.cpp converts Mistral checkpoints to the "llama" GGUF architecture: the Llama plugin serves them.
    gguf_architectures: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ConfigError(f"MistralConfig.sliding_window must be a positive int or null, got {self.sliding_window}")

    @property
    def layer_sliding_windows(self) -> tuple[int | None, ...]:
        """The attention window of each layer (the same in all of Mistral's)."""
        return (self.sliding_window,) * self.num_hidden_layers
