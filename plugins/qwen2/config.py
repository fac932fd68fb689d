"""``Qwen2Config``: Qwen2 / Qwen2.5 hyper-parameters from a checkpoint's config.json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from inference_pio.plugin import ConfigError
from inference_pio.plugin.decoder_config import DecoderConfig

_LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclass(kw_only=True)
class Qwen2Config(DecoderConfig):
    """The shared decoder with biases on the q/k/v projections (never on o_proj or the MLP).

    Qwen2 checkpoints differ from Llama in their values (151936-token vocabulary, rope theta 1e6,
    tied embeddings in the small models), which config.json carries, and in an optional sliding
    window: with ``use_sliding_window`` the layers from ``max_window_layers`` on attend to the last
    ``sliding_window`` tokens only. ``layer_types`` (transformers 5 writes it) wins over that rule.
    Defaults are transformers' ``Qwen2Config`` ones, for keys a config.json leaves out.
    """

    vocab_size: int = 151936
    max_position_embeddings: int = 32768
    use_sliding_window: bool = False
    sliding_window: int | None = 4096
    max_window_layers: int = 28
    layer_types: list | None = None

    # llama.cpp writes Qwen2 GGUFs without the Q/K row permutation the Llama GGUF loader undoes: not read yet.
    gguf_architectures: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attention_bias or self.mlp_bias:
            raise ConfigError("Qwen2Config: Qwen2 has biases on q/k/v only; attention_bias / mlp_bias must stay false")
        if not self.use_sliding_window:
            self.sliding_window = None
        elif self.sliding_window is None or self.sliding_window <= 0:
            raise ConfigError(f"Qwen2Config.sliding_window must be a positive int with use_sliding_window, "
                              f"got {self.sliding_window}")
        if self.layer_types is None:
            self.layer_types = ["sliding_attention" if self.sliding_window and i >= self.max_window_layers
                                else "full_attention" for i in range(self.num_hidden_layers)]
        if len(self.layer_types) != self.num_hidden_layers or not set(self.layer_types) <= set(_LAYER_TYPES):
            raise ConfigError(f"Qwen2Config.layer_types must list {self.num_hidden_layers} of {_LAYER_TYPES}, "
                              f"got {self.layer_types}")
        if "sliding_attention" in self.layer_types and self.sliding_window is None:
            raise ConfigError("Qwen2Config.layer_types has sliding_attention layers but no sliding_window "
                              "(set use_sliding_window and sliding_window)")

    @property
    def qkv_bias(self) -> bool:
        return True

    @property
    def o_bias(self) -> bool:
        return False

    @property
    def layer_sliding_windows(self) -> tuple[int | None, ...]:
        """The attention window of each layer; ``None`` attends to the whole context."""
        return tuple(self.sliding_window if kind == "sliding_attention" else None for kind in self.layer_types)
