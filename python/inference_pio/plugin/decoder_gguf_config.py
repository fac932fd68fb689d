"""A Llama-family decoder's config fields from a GGUF file's metadata (llama.cpp's keys).

``decoder_fields_from_gguf`` returns the ``DecoderConfig`` fields the file states; every value is
checked for its type and range and against the tensors the file holds before anything is built.
"""

from __future__ import annotations

import math
from typing import Any

from ..messages import shorten
from .config import layers_present
from .errors import ConfigError

# GGUF metadata key (after "<arch>.") -> config field.
_GGUF_FIELDS = {
    "vocab_size": "vocab_size", "embedding_length": "hidden_size", "feed_forward_length": "intermediate_size",
    "block_count": "num_hidden_layers", "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads", "attention.key_length": "head_dim",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps", "rope.freq_base": "rope_theta",
    "context_length": "max_position_embeddings",
}
_GGUF_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
_GGUF_FLOATS = ("rms_norm_eps", "rope_theta")


def decoder_fields_from_gguf(gguf, architectures: tuple[str, ...], config_name: str) -> dict[str, Any]:
    """The config fields ``gguf`` (an opened ``GGUFFile``) states, ``model_path`` included.

    Raises ``ConfigError`` for an architecture outside ``architectures`` (``config_name`` names the
    config class refusing it) and for what the decoder does not model (partial rotary, per-frequency
    RoPE factors)."""
    path, arch, get = str(gguf.path), gguf.architecture, gguf.get
    if arch not in architectures:
        raise ConfigError(f"{path}: GGUF architecture {shorten(arch)} is not supported by {config_name} "
                          f"(supported: {', '.join(architectures) or 'none'})")
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
                          f"{head_dim}: partial rotary is not supported for the {arch} architecture")
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
    return data


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
