"""``LlamaConfig``: the Llama architecture's fields, read from a checkpoint's config.json or a GGUF."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from inference_pio.layers.rope_parameters import rope_theta_and_scaling
from inference_pio.plugin import BaseConfig, ConfigError

# GGUF metadata key (after "llama.") -> LlamaConfig field.
_GGUF_FIELDS = {
    "vocab_size": "vocab_size", "embedding_length": "hidden_size", "feed_forward_length": "intermediate_size",
    "block_count": "num_hidden_layers", "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads", "attention.key_length": "head_dim",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps", "rope.freq_base": "rope_theta",
    "context_length": "max_position_embeddings",
}
_GGUF_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


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
    #: ``general.architecture`` values of the GGUF files ``from_gguf`` reads.
    gguf_architectures: ClassVar[tuple[str, ...]] = ("llama",)

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
        self.rope_theta, self.rope_scaling = rope_theta_and_scaling(self.rope_theta, self.rope_scaling,
                                                                    self.rope_parameters)
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

    @classmethod
    def from_gguf(cls, source: Any, **overrides: Any) -> "LlamaConfig":
        """Build from a GGUF file's metadata (``source``: a path or an opened ``GGUFFile``).

        ``model_path`` is set to the file. Raises ``ConfigError`` for another architecture and for
        what the Llama plugin does not model (partial rotary, per-frequency RoPE factors).
        """
        from inference_pio.weights.gguf_file import open_gguf

        gguf = open_gguf(source)
        path, arch, get = str(gguf.path), gguf.architecture, gguf.get
        if arch not in cls.gguf_architectures:
            raise ConfigError(f"{path}: GGUF architecture {arch!r} is not supported by {cls.__name__} "
                              f"(supported: {', '.join(cls.gguf_architectures) or 'none'})")
        data = {field: get(f"{arch}.{key}") for key, field in _GGUF_FIELDS.items()}
        data = {k: v for k, v in data.items() if v is not None}
        missing = [f"{arch}.{key}" for key, field in _GGUF_FIELDS.items()
                   if field in _GGUF_REQUIRED and field not in data]
        if missing:
            raise ConfigError(f"{path}: GGUF metadata lacks {', '.join(missing)}")
        tensors = {t.name: t for t in gguf.tensors}
        if "vocab_size" not in data and "token_embd.weight" in tensors:
            data["vocab_size"] = tensors["token_embd.weight"].shape[0]
        rotary = get(f"{arch}.rope.dimension_count")
        head_dim = data.get("head_dim", data["hidden_size"] // data["num_attention_heads"])
        if rotary is not None and rotary != head_dim:
            raise ConfigError(f"{path}: rotary dimension {rotary} differs from head_dim {head_dim}: "
                              "partial rotary is not supported for the Llama architecture")
        if "rope_freqs.weight" in tensors:
            raise ConfigError(f"{path}: per-frequency RoPE factors (rope_freqs.weight, Llama 3.1-style long "
                              "context) are not supported yet")
        scaling = get(f"{arch}.rope.scaling.type", "none")
        if scaling not in ("none", "linear", "yarn"):
            raise ConfigError(f"{path}: rope scaling {scaling!r} is not supported (none, linear, yarn are)")
        if scaling != "none":
            data["rope_scaling"] = {"rope_type": scaling,
                                    "factor": float(get(f"{arch}.rope.scaling.factor", 1.0))}
            original = get(f"{arch}.rope.scaling.original_context_length")
            if original is not None:
                data["rope_scaling"]["original_max_position_embeddings"] = int(original)
        data.update(
            tie_word_embeddings="output.weight" not in tensors,
            attention_bias="blk.0.attn_q.bias" in tensors, mlp_bias="blk.0.ffn_gate.bias" in tensors,
            bos_token_id=get("tokenizer.ggml.bos_token_id"),
            eos_token_id=get("tokenizer.ggml.eos_token_id"),
            name_or_path=get("general.name", ""), model_path=path,
        )
        data["rms_norm_eps"] = float(data.get("rms_norm_eps", 1e-6))
        return cls.from_dict(data, **overrides)
