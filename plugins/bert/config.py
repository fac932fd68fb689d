"""``BertConfig``: the BERT encoder's fields, read from a checkpoint's config.json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from inference_pio.plugin import BaseConfig, ConfigError

# transformers' ACT2FN names -> F.gelu's ``approximate`` argument ("relu" handled apart).
GELU_APPROXIMATIONS = {"gelu": "none", "gelu_python": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh",
                       "gelu_fast": "tanh"}
ACTIVATIONS = (*GELU_APPROXIMATIONS, "relu")


@dataclass(kw_only=True)
class BertConfig(BaseConfig):
    """BERT / MiniLM / BGE / E5 (BERT architecture) encoder hyper-parameters.

    Field names are transformers' ``config.json`` keys. Only absolute position embeddings are
    served. ``max_seq_len`` (tokens one text may keep) is capped at ``max_position_embeddings``.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int | None = 0
    position_embedding_type: str = "absolute"
    name_or_path: str = ""

    config_aliases: ClassVar[dict[str, str]] = {**BaseConfig.config_aliases, "_name_or_path": "name_or_path"}

    def __post_init__(self) -> None:
        super().__post_init__()
        name = type(self).__name__
        for field_name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            if getattr(self, field_name) <= 0:
                raise ConfigError(f"{name}.{field_name} must be positive, got {getattr(self, field_name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"{name}.hidden_size ({self.hidden_size}) is not a multiple of "
                              f"num_attention_heads ({self.num_attention_heads})")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"{name}.hidden_act {self.hidden_act!r} is not supported (one of {', '.join(ACTIVATIONS)})")
        if self.position_embedding_type != "absolute":
            raise ConfigError(f"{name}.position_embedding_type {self.position_embedding_type!r} is not supported "
                              "(only 'absolute')")
        self.max_seq_len = min(self.max_seq_len, self.max_position_embeddings)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_pretrained_config(cls, config_json: dict[str, Any], **overrides: Any) -> "BertConfig":
        architectures = config_json.get("architectures") or ["BertModel"]
        if config_json.get("model_type", "bert") != "bert" and not any(a.startswith("Bert") for a in architectures):
            raise ConfigError(f"not a BERT checkpoint: model_type {config_json.get('model_type')!r}, "
                              f"architectures {architectures}")
        return super().from_pretrained_config(config_json, **overrides)
