"""``DecoderConfig``: the fields and switches of the shared Llama-family decoder (``layers/decoder.py``).

A family's config derives from it and sets what differs: its defaults and the switches (``qkv_bias``, ``o_bias``, ``qk_norm``,
``layer_sliding_windows``, ``rotary_dim``, ``weight_layout``). Field names are transformers'
``config.json`` keys. Which ``model_type`` / ``architectures`` a config reads and the family it
reports come from the ``plugin_manifest.json`` beside the config's module (the manifest is their only
source; a config defined outside a plugin folder keeps what its class says).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..layers.decoder_weights import LLAMA_WEIGHTS, DecoderWeights
from ..layers.rope_parameters import rope_theta_and_scaling
from ..messages import shorten
from .config import BaseConfig, config_errors_named
from .errors import ConfigError
from .manifest import MANIFEST_FILENAME, load_manifest


@dataclass(kw_only=True)
class DecoderConfig(BaseConfig):
    """Hyper-parameters of a Llama-architecture decoder.

    ``head_dim`` defaults to ``hidden_size // num_attention_heads`` and ``num_key_value_heads`` to
    ``num_attention_heads`` (MHA). ``rope_scaling`` also accepts transformers 5's ``rope_parameters``
    (whose ``rope_theta`` then wins over the top-level one).
    """

    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    rope_parameters: dict | None = None
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | list | None = None
    name_or_path: str = ""

    config_aliases: ClassVar[dict[str, str]] = {**BaseConfig.config_aliases, "_name_or_path": "name_or_path"}
    #: ``model_type`` / ``architectures`` values of the checkpoints this config reads; a config.json
    #: without ``model_type`` counts as ``default_model_type``.
    model_types: ClassVar[tuple[str, ...]] = ()
    architectures: ClassVar[tuple[str, ...]] = ()
    default_model_type: ClassVar[str | None] = None
    #: ``general.architecture`` values of the GGUF files ``from_gguf`` reads.
    gguf_architectures: ClassVar[tuple[str, ...]] = ()
    #: The checkpoint's tensor names and which of them stack into qkv and gate_up.
    weight_layout: ClassVar[DecoderWeights] = LLAMA_WEIGHTS
    #: Per-head RMSNorm of q and k before RoPE (Qwen3): weights ``self_attn.q_norm`` / ``k_norm [head_dim]``.
    qk_norm: ClassVar[bool] = False
    #: The family name reported in the plugin's metadata (the manifest's ``model_family``).
    family_name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        manifest_path = Path(inspect.getfile(cls)).with_name(MANIFEST_FILENAME)
        if manifest_path.is_file():  # a plugin's config: routing and family are the manifest's
            manifest = load_manifest(manifest_path)
            cls.model_types = tuple(manifest.model_types)
            cls.architectures = tuple(manifest.architectures)
            cls.family_name = manifest.model_family

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        self.check_positive("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta",
                            "max_position_embeddings")
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError(f"{name}.hidden_size ({self.hidden_size}) is not a multiple of "
                                  f"num_attention_heads ({self.num_attention_heads}); set head_dim")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"{name}.num_attention_heads ({self.num_attention_heads}) must be a multiple "
                              f"of num_key_value_heads ({self.num_key_value_heads})")
        self.rope_theta, self.rope_scaling = rope_theta_and_scaling(self.rope_theta, self.rope_scaling,
                                                                    self.rope_parameters)
        _check_rope_factors(name, self.rope_scaling)
        for field in ("bos_token_id", "eos_token_id"):
            ids = getattr(self, field)
            listed = ids if isinstance(ids, list) else [] if ids is None else [ids]
            if not all(type(i) is int and i >= 0 for i in listed):
                raise ConfigError(f"{name}.{field} must be a token id or a list of them, got {shorten(ids)}")
        # Never serve past the positions the model was built for.
        self.max_seq_len = min(self.max_seq_len, self.max_position_embeddings)

    # ----- switches the decoder reads (a family overrides what differs) -----

    @property
    def qkv_bias(self) -> bool:
        """Whether q/k/v projections have biases (Qwen2: always)."""
        return self.attention_bias

    @property
    def o_bias(self) -> bool:
        return self.attention_bias

    @property
    def layer_sliding_windows(self) -> tuple[int | None, ...]:
        """The attention window of each layer; ``None`` attends to the whole context."""
        return (None,) * self.num_hidden_layers

    @property
    def rotary_dim(self) -> int:
        """How many dims of each head RoPE rotates (all of them here)."""
        return self.head_dim

    # ----- derived sizes -----

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @property
    def eos_token_ids(self) -> tuple[int, ...]:
        ids = self.eos_token_id
        return () if ids is None else (ids,) if isinstance(ids, int) else tuple(ids)

    @property
    def family(self) -> str:
        return self.family_name

    # ----- reading -----

    @classmethod
    def from_pretrained_config(cls, config_json: dict[str, Any], **overrides: Any) -> "DecoderConfig":
        model_type = config_json.get("model_type", cls.default_model_type)
        architectures = config_json.get("architectures") or []
        if (model_type or architectures) and model_type not in cls.model_types \
                and not set(architectures) & set(cls.architectures):
            family = cls.__name__.removesuffix("Config")
            raise ConfigError(f"not a {family} checkpoint: model_type {config_json.get('model_type')!r}, "
                              f"architectures {architectures}")
        return super().from_pretrained_config(config_json, **overrides)

    def check_checkpoint(self, shapes: dict[str, tuple[int, ...]], where: str | Path) -> None:
        """Also refuse a head size the first layer's query projection contradicts: the RoPE table
        (``head_dim`` x positions) is allocated when the model is built."""
        super().check_checkpoint(shapes, where)
        q = shapes.get("model.layers.0.self_attn.q_proj.weight")
        if q and q[0] != self.q_size:
            raise ConfigError(f"{where}: num_attention_heads ({self.num_attention_heads}) x head_dim ({self.head_dim}) "
                              f"= {self.q_size} does not match the {q[0]} rows of model.layers.0.self_attn.q_proj.weight")

    @classmethod
    def from_gguf(cls, source: Any, **overrides: Any) -> "DecoderConfig":
        """Build from a GGUF file's metadata (``source``: a path or an opened ``GGUFFile``).

        ``model_path`` is set to the file. Raises ``ConfigError`` for an architecture outside
        ``gguf_architectures`` and for what the decoder does not model (partial rotary,
        per-frequency RoPE factors)."""
        from ..weights.gguf_file import open_gguf
        from .decoder_gguf_config import decoder_fields_from_gguf

        gguf = open_gguf(source)
        data = decoder_fields_from_gguf(gguf, cls.gguf_architectures, cls.__name__)
        with config_errors_named(str(gguf.path)):
            return cls.from_dict(data, **overrides)


def _check_rope_factors(name: str, rope_scaling: dict | None) -> None:
    for key in ("factor", "low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow", "attention_factor"):
        value = (rope_scaling or {}).get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
                                  or not math.isfinite(value)):
            raise ConfigError(f"{name}.rope_scaling[{key!r}] must be a positive number, got {shorten(value)}")
