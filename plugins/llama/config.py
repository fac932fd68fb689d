"""``LlamaConfig``: the Llama architecture's fields, read from a checkpoint's config.json or a GGUF."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from inference_pio.layers.rope_parameters import rope_theta_and_scaling
from inference_pio.messages import shorten
from inference_pio.plugin import BaseConfig, ConfigError
from inference_pio.plugin.config import config_errors_named, layers_present

# GGUF metadata key (after "llama.") -> LlamaConfig field.
_GGUF_FIELDS = {
    "vocab_size": "vocab_size", "embedding_length": "hidden_size", "feed_forward_length": "intermediate_size",
    "block_count": "num_hidden_layers", "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads", "attention.key_length": "head_dim",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps", "rope.freq_base": "rope_theta",
    "context_length": "max_position_embeddings",
}
_GGUF_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
_GGUF_FLOATS = ("rms_norm_eps", "rope_theta")


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
        self.check_positive("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps", "rope_theta",
                            "max_position_embeddings")
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
        _check_rope_factors(self.rope_scaling)
        for name in ("bos_token_id", "eos_token_id"):
            ids = getattr(self, name)
            listed = ids if isinstance(ids, list) else [] if ids is None else [ids]
            if not all(type(i) is int and i >= 0 for i in listed):
                raise ConfigError(f"{type(self).__name__}.{name} must be a token id or a list of them, got {shorten(ids)}")
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

    def check_checkpoint(self, shapes: dict[str, tuple[int, ...]], where: str | Path) -> None:
        """Also refuse a head size the first layer's query projection contradicts: the RoPE table
        (``head_dim`` x positions) is allocated when the model is built."""
        super().check_checkpoint(shapes, where)
        q = shapes.get("model.layers.0.self_attn.q_proj.weight")
        if q and q[0] != self.q_size:
            raise ConfigError(f"{where}: num_attention_heads ({self.num_attention_heads}) x head_dim ({self.head_dim}) "
                              f"= {self.q_size} does not match the {q[0]} rows of model.layers.0.self_attn.q_proj.weight")

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
            raise ConfigError(f"{path}: GGUF architecture {shorten(arch)} is not supported by {cls.__name__} "
                              f"(supported: {', '.join(cls.gguf_architectures) or 'none'})")
        data = {field: get(f"{arch}.{key}") for key, field in _GGUF_FIELDS.items()}
        data = {k: v for k, v in data.items() if v is not None}
        missing = [f"{arch}.{key}" for key, field in _GGUF_FIELDS.items()
                   if field in _GGUF_REQUIRED and field not in data]
        if missing:
            raise ConfigError(f"{path}: GGUF metadata lacks {', '.join(missing)}")
        key_of = {field: f"{arch}.{key}" for key, field in _GGUF_FIELDS.items()}
        for field, value in data.items():  # each must have the type and range it is read as
            _check_gguf_number(path, key_of[field], value, integer=field not in _GGUF_FLOATS)
        tensors = {t.name: t for t in gguf.tensors}
        _check_gguf_sizes(path, arch, data, tensors)
        if "vocab_size" not in data and "token_embd.weight" in tensors:
            data["vocab_size"] = tensors["token_embd.weight"].shape[0]
        rotary = get(f"{arch}.rope.dimension_count")
        head_dim = data.get("head_dim", data["hidden_size"] // data["num_attention_heads"])
        if rotary is not None and rotary != head_dim:
            raise ConfigError(f"{path}: {arch}.rope.dimension_count = {shorten(rotary)} differs from head_dim "
                              f"{head_dim}: partial rotary is not supported for the Llama architecture")
        if "rope_freqs.weight" in tensors:
            raise ConfigError(f"{path}: per-frequency RoPE factors (rope_freqs.weight, Llama 3.1-style long "
                              "context) are not supported yet")
        scaling = get(f"{arch}.rope.scaling.type", "none")
        if scaling not in ("none", "linear", "yarn"):
            raise ConfigError(f"{path}: rope scaling {shorten(scaling)} is not supported (none, linear, yarn are)")
        if scaling != "none":
            factor = get(f"{arch}.rope.scaling.factor", 1.0)
            _check_gguf_number(path, f"{arch}.rope.scaling.factor", factor, integer=False)
            data["rope_scaling"] = {"rope_type": scaling, "factor": float(factor)}
            original = get(f"{arch}.rope.scaling.original_context_length")
            if original is not None:
                _check_gguf_number(path, f"{arch}.rope.scaling.original_context_length", original, integer=True)
                data["rope_scaling"]["original_max_position_embeddings"] = original
        vocab = data.get("vocab_size")
        data.update(
            tie_word_embeddings="output.weight" not in tensors,
            attention_bias="blk.0.attn_q.bias" in tensors, mlp_bias="blk.0.ffn_gate.bias" in tensors,
            bos_token_id=gguf_token_id(gguf, "tokenizer.ggml.bos_token_id", vocab),
            eos_token_id=gguf_token_id(gguf, "tokenizer.ggml.eos_token_id", vocab),
            name_or_path=name if isinstance(name := get("general.name", ""), str) else "", model_path=path,
        )
        data["rms_norm_eps"] = float(data.get("rms_norm_eps", 1e-6))
        with config_errors_named(path):
            return cls.from_dict(data, **overrides)


def gguf_token_id(gguf, key: str, vocab_size: int | None) -> int | None:
    """The optional token id at ``key``; ``None`` (the token absent) when it is missing, not an integer
    or outside the vocabulary, as llama.cpp treats it."""
    value = gguf.get(key)
    if type(value) is not int or value < 0 or (vocab_size is not None and value >= vocab_size):
        return None
    return value


def _check_gguf_number(path: str, key: str, value: Any, *, integer: bool) -> None:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0 or (
            isinstance(value, float) and not math.isfinite(value)):
        what = "a positive integer" if integer else "a positive finite number"
        raise ConfigError(f"{path}: {key} = {shorten(value)}: must be {what}")


def _check_gguf_sizes(path: str, arch: str, data: dict[str, Any], tensors: dict[str, Any]) -> None:
    """Head counts divide what they split, and the sizes that are allocated when the model is built
    (layers, the RoPE table's head size) match the tensors the file holds."""
    hidden, heads = data["hidden_size"], data["num_attention_heads"]
    kv_heads = data.get("num_key_value_heads", heads)
    if "head_dim" not in data and hidden % heads:
        raise ConfigError(f"{path}: {arch}.embedding_length ({hidden}) is not a multiple of "
                          f"{arch}.attention.head_count ({heads})")
    if heads % kv_heads:
        raise ConfigError(f"{path}: {arch}.attention.head_count ({heads}) is not a multiple of "
                          f"{arch}.attention.head_count_kv ({kv_heads})")
    blocks, present = data["num_hidden_layers"], layers_present(tensors) or 0
    if blocks > present:
        raise ConfigError(f"{path}: {arch}.block_count = {blocks}: the file holds the tensors of {present} blocks")
    head_dim = data.get("head_dim", hidden // heads)
    for name, rows, what in (("blk.0.attn_q.weight", heads * head_dim, "head_count"),
                             ("blk.0.attn_k.weight", kv_heads * head_dim, "head_count_kv")):
        if name in tensors and tensors[name].shape[0] != rows:
            raise ConfigError(f"{path}: {arch}.attention.{what} x head size {head_dim} = {rows} does not match "
                              f"the {tensors[name].shape[0]} rows of {name}")
    embd = tensors.get("token_embd.weight")
    if embd is not None and embd.shape != (data.get("vocab_size", embd.shape[0]), hidden):
        raise ConfigError(f"{path}: {arch}.vocab_size x {arch}.embedding_length = "
                          f"[{data.get('vocab_size', embd.shape[0])}, {hidden}] does not match token_embd.weight "
                          f"of shape {list(embd.shape)}")


def _check_rope_factors(rope_scaling: dict | None) -> None:
    for key in ("factor", "low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow", "attention_factor"):
        value = (rope_scaling or {}).get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0
                                  or not math.isfinite(value)):
            raise ConfigError(f"LlamaConfig.rope_scaling[{key!r}] must be a positive number, got {shorten(value)}")
