"""``Qwen3Config``: Qwen3 hyper-parameters from a checkpoint's config.json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from inference_pio.plugin import ConfigError
from inference_pio.plugin.decoder_config import DecoderConfig


@dataclass(kw_only=True)
class Qwen3Config(DecoderConfig):
    """The shared decoder with a per-head RMSNorm of q and k (weights ``self_attn.q_norm`` /
    ``k_norm [head_dim]``, eps ``rms_norm_eps``) between the projection and RoPE.

    No biases unless ``attention_bias`` (then on q, k, v and o, as transformers builds them).
    ``head_dim`` is its own key (128 in the released models, not ``hidden_size / heads``). With
    ``use_sliding_window`` the layers from ``max_window_layers`` on attend to the last
    ``sliding_window`` tokens; ``layer_types`` (transformers 5 writes it) wins over that rule.
    Defaults are transformers' ``Qwen3Config`` ones, for keys a config.json leaves out.
    """

    vocab_size: int = 151936
    intermediate_size: int = 22016
    head_dim: int | None = 128
    max_position_embeddings: int = 32768
    hidden_act: str = "silu"
    use_sliding_window: bool = False
    sliding_window: int | None = 4096
    max_window_layers: int = 28
    layer_types: list | None = None

    qk_norm: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden_act != "silu":
            raise ConfigError(f"Qwen3Config.hidden_act must be 'silu' (the gated MLP's), got {self.hidden_act!r}")
        if self.mlp_bias:
            raise ConfigError("Qwen3Config.mlp_bias must stay false: Qwen3's MLP has no biases")
        window = self.sliding_window if self.use_sliding_window else None
        if self.layer_types is None:
            self.layer_types = ["sliding_attention" if window and i >= self.max_window_layers else "full_attention"
                                for i in range(self.num_hidden_layers)]
        if len(self.layer_types) != self.num_hidden_layers or \
                not set(self.layer_types) <= {"full_attention", "sliding_attention"}:
            raise ConfigError(f"Qwen3Config.layer_types must list {self.num_hidden_layers} of 'full_attention' / "
                              f"'sliding_attention', got {self.layer_types}")
        if "sliding_attention" in self.layer_types and not (isinstance(window, int) and window > 0):
            raise ConfigError("Qwen3Config.layer_types has sliding_attention layers but no positive sliding_window "
                              f"with use_sliding_window (got {self.sliding_window}, {self.use_sliding_window})")
        self.sliding_window = window

    @property
    def layer_sliding_windows(self) -> tuple[int | None, ...]:
        """The attention window of each layer; ``None`` attends to the whole context."""
        return tuple(self.sliding_window if kind == "sliding_attention" else None for kind in self.layer_types)
