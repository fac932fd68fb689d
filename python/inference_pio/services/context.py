"""Default context length and batch size of a local model: the model's own limit, bounded by memory.

A model's limit is read from its checkpoint without loading it (GGUF ``<arch>.context_length``, or
config.json ``max_position_embeddings``), with the KV cache's size per token (layers x 2 x KV heads x
head width x 4 bytes, float32 being the widest cache we keep). The KV cache of ``max_batch_size``
sequences of the full context must fit in a quarter of the memory available now; when it does not,
fewer sequences share the batch first (a long context matters more to an agent than concurrency), and
only below one sequence does the context shrink.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

_KV_BYTES = 4  # float32: the widest KV cache dtype
_MEMORY_SHARE = 4  # the KV cache may take 1 / this of the available memory
_MIN_CONTEXT = 512
_DEFAULT_BATCH = 8  # the plugins' default max_batch_size


def _gguf_shape(path: Path) -> dict[str, Any] | None:
    from ..weights.gguf_file import open_gguf

    gguf = open_gguf(path)
    arch = gguf.architecture
    get = lambda key: gguf.get(f"{arch}.{key}")  # noqa: E731
    heads, width = get("attention.head_count"), get("embedding_length")
    head_dim = get("attention.key_length") or (width // heads if heads and width else None)
    return {"context": get("context_length"), "layers": get("block_count"),
            "kv_heads": get("attention.head_count_kv") or heads, "head_dim": head_dim}


def _config_shape(folder: Path) -> dict[str, Any] | None:
    config_file = folder / "config.json"
    if not config_file.is_file():
        return None
    config = json.loads(config_file.read_text())
    config = config.get("text_config", config)
    heads, width = config.get("num_attention_heads"), config.get("hidden_size")
    head_dim = config.get("head_dim") or (width // heads if heads and width else None)
    return {"context": config.get("max_position_embeddings"), "layers": config.get("num_hidden_layers"),
            "kv_heads": config.get("num_key_value_heads") or heads, "head_dim": head_dim}


def model_shape(path: str | Path) -> dict[str, Any] | None:
    """``{"context", "layers", "kv_heads", "head_dim"}`` (values may be None) of a GGUF file or checkpoint folder;
    None when neither describes it."""
    path = Path(path)
    try:
        return _gguf_shape(path) if path.is_file() else _config_shape(path)
    except (OSError, ValueError, TypeError, KeyError):
        return None


def available_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_load_options(path: str | Path, options: dict[str, Any], memory_bytes: int | None = None) -> dict[str, Any]:
    """``options`` plus ``max_seq_len`` (the model's limit, bounded by memory) and, when the full batch would not
    fit, a smaller ``max_batch_size``; unchanged when the caller set ``max_seq_len`` or the checkpoint says
    nothing usable."""
    if "max_seq_len" in options:
        return dict(options)
    shape = model_shape(path)
    if not shape or not isinstance(shape.get("context"), int) or shape["context"] < 1:
        return dict(options)
    context = shape["context"]
    out = dict(options, max_seq_len=context)
    sizes = (shape.get("layers"), shape.get("kv_heads"), shape.get("head_dim"))
    memory = memory_bytes if memory_bytes is not None else available_memory_bytes()
    if memory is None or not all(isinstance(v, int) and v > 0 for v in sizes):
        return out
    per_token = 2 * _KV_BYTES * sizes[0] * sizes[1] * sizes[2]
    tokens = memory // _MEMORY_SHARE // per_token  # KV tokens the memory share holds
    batch = options.get("max_batch_size", _DEFAULT_BATCH)
    if batch * context > tokens:
        fitting = tokens // context
        if fitting >= 1:
            out["max_batch_size"] = min(batch, int(fitting))
        else:
            out["max_batch_size"] = 1
            out["max_seq_len"] = max(_MIN_CONTEXT, int(tokens) // 16 * 16)
    return out


__all__ = ["available_memory_bytes", "default_load_options", "model_shape"]
