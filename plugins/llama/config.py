"""``LlamaConfig``: the Llama architecture's fields, read from a checkpoint's config.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from inference_pio.plugin import BaseConfig, ConfigError


@dataclass(kw_only=True)
class LlamaConfig(BaseConfig):
    """Llama / TinyLlama / DeepSeek-Coder (Llama architecture) hyper-parameters.

    Field names are transformers' ``config.json`` keys. ``head_dim`` defaults to
    ``hidden_size // num_attention_heads`` and ``num_key_value_heads`` to
    ``num_attention_heads`` (MHA). ``rope_scaling`` also accepts transformers 5's
    ``rope_parameters`` (whose ``rope_theta`` then wins over the top-level one).
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

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError(f"LlamaConfig.hidden_size ({self.hidden_size}) is not a multiple of "
                                  f"num_attention_heads ({self.num_attention_heads}); set head_dim")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"LlamaConfig.num_attention_heads ({self.num_attention_heads}) must be a multiple "
                              f"of num_key_value_heads ({self.num_key_value_heads})")
        if self.rope_parameters:
            # transformers 5 keeps theta and scaling together in rope_parameters.
            self.rope_theta = float(self.rope_parameters.get("rope_theta", self.rope_theta))
            if self.rope_scaling is None:
                self.rope_scaling = {k: v for k, v in self.rope_parameters.items() if k != "rope_theta"}
        if self.rope_scaling is not None and self.rope_scaling.get("rope_type",
                                                                   self.rope_scaling.get("type")) in (None, "default"):
            self.rope_scaling = None
        # Never serve past the positions the model was built for.
        self.max_seq_len = min(self.max_seq_len, self.max_position_embeddings)

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
        """"DeepSeek" for DeepSeek's Llama-architecture checkpoints, else "Llama"."""
        folder = Path(self.model_path).name if self.model_path else ""
        where = f"{self.name_or_path} {folder}".lower()
        return "DeepSeek" if "deepseek" in where else "Llama"

    @classmethod
    def from_pretrained_config(cls, config_json: dict[str, Any], **overrides: Any) -> "LlamaConfig":
        architectures = config_json.get("architectures") or ["LlamaForCausalLM"]
        if config_json.get("model_type", "llama") != "llama" and "LlamaForCausalLM" not in architectures:
            raise ConfigError(f"not a Llama checkpoint: model_type {config_json.get('model_type')!r}, "
                              f"architectures {architectures}")
        return super().from_pretrained_config(config_json, **overrides)
