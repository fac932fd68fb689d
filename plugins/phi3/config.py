"""``Phi3Config``: Phi-3 family hyper-parameters from a checkpoint's config.json, and its checkpoint layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from inference_pio.layers.decoder_weights import DecoderWeights, Norm, Projection
from inference_pio.layers.rope_parameters import partial_rotary_dim
from inference_pio.plugin import ConfigError
from inference_pio.plugin.decoder_config import DecoderConfig

# The checkpoint holds qkv_proj [q + 2 kv, hidden] and gate_up_proj [2 intermediate, hidden] fused
# already, in the decoder's own row order (q, k, v; gate, up): nothing to stack, no biases.
PHI3_WEIGHTS = DecoderWeights(
    projections=(Projection("self_attn.qkv_proj", "qkv_size", "hidden_size"),
                 Projection("self_attn.o_proj", "hidden_size", "q_size"),
                 Projection("mlp.gate_up_proj", "gate_up_size", "hidden_size"),
                 Projection("mlp.down_proj", "hidden_size", "intermediate_size")),
    norms=(Norm("input_layernorm"), Norm("post_attention_layernorm")),
)

# Older Phi-3 config.json files name LongRoPE "su" or "yarn"; transformers reads both as longrope.
_LONGROPE_ALIASES = ("su", "yarn", "longrope")


@dataclass(kw_only=True)
class Phi3Config(DecoderConfig):
    """The shared decoder without biases, its fused projections read as stored (``PHI3_WEIGHTS``).

    RoPE: ``rope_scaling`` / ``rope_parameters`` of type ``longrope`` (short and long factors
    switching at ``original_max_position_embeddings``, see ``ops.rope_cache``) and
    ``partial_rotary_factor`` (top level or in ``rope_parameters``: the first
    ``int(head_dim * factor)`` dims of each head rotate). ``sliding_window`` (Phi-3-mini: 2047)
    windows every layer's attention, as transformers' mask does. Defaults are transformers'
    ``Phi3Config`` ones, for keys a config.json leaves out.
    """

    vocab_size: int = 32064
    hidden_size: int = 3072
    intermediate_size: int = 8192
    max_position_embeddings: int = 4096
    original_max_position_embeddings: int = 4096
    rms_norm_eps: float = 1e-5
    hidden_act: str = "silu"
    partial_rotary_factor: float | None = None
    sliding_window: int | None = None
    bos_token_id: int | None = 1
    eos_token_id: int | list | None = 32000

    weight_layout: ClassVar[DecoderWeights] = PHI3_WEIGHTS

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden_act != "silu":
            raise ConfigError(f"Phi3Config.hidden_act must be 'silu' (the gated MLP's), got {self.hidden_act!r}")
        if self.attention_bias or self.mlp_bias:
            raise ConfigError("Phi3Config: Phi-3 has no biases; attention_bias / mlp_bias must stay false")
        if self.sliding_window is not None and (isinstance(self.sliding_window, bool) or self.sliding_window <= 0):
            raise ConfigError(f"Phi3Config.sliding_window must be a positive int or null, got {self.sliding_window}")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if kind not in _LONGROPE_ALIASES:
                raise ConfigError(f"Phi3Config.rope_scaling type {kind!r}: Phi-3 uses default RoPE or longrope")
            # Older files keep original_max_position_embeddings at the top level only.
            self.rope_scaling = {"original_max_position_embeddings": self.original_max_position_embeddings,
                                 **self.rope_scaling, "rope_type": "longrope"}
            self.rope_scaling.pop("type", None)
        try:
            self._rotary_dim = partial_rotary_dim(self.head_dim, self.partial_rotary_factor, self.rope_parameters)
        except ValueError as exc:
            raise ConfigError(f"Phi3Config: {exc}") from None

    @property
    def rotary_dim(self) -> int:
        """How many dims of each head RoPE rotates (``partial_rotary_factor`` of them)."""
        return self._rotary_dim

    @property
    def layer_sliding_windows(self) -> tuple[int | None, ...]:
        return (self.sliding_window,) * self.num_hidden_layers

    @property
    def qkv_size(self) -> int:
        return self.q_size + 2 * self.kv_size

    @property
    def gate_up_size(self) -> int:
        return 2 * self.intermediate_size
