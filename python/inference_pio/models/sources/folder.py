"""A safetensors checkpoint folder (config.json + ``*.safetensors``), as Hugging Face and
custom sources lay it out: the facts come from config.json and the safetensors headers,
no tensor data is read."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import InvalidModelError
from ..types import ModelFormat, ModelSource
from .base import FoundModel, capabilities_for, name_from, plugin_for, size_on_disk

_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
                       "I8": "int8", "U8": "uint8", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def read_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json as a dict; ``InvalidModelError`` when missing or unreadable."""
    from ...plugin.config import read_config_json
    from ...plugin.errors import ConfigError

    try:
        return read_config_json(folder)
    except ConfigError as e:
        raise InvalidModelError(str(e)) from e


def safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():  # a sharded checkpoint: every shard the index names must be there
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise InvalidModelError(f"{index}: unreadable shard index ({e})") from e
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise InvalidModelError(f"{folder}: incomplete checkpoint, missing shard(s) {', '.join(missing)}")
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        pickles = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        hint = (f" (found {', '.join(pickles)}: pickle checkpoints are refused, convert to safetensors)"
                if pickles else "")
        raise InvalidModelError(f"{folder}: no *.safetensors weights{hint}")
    return files


def describe_checkpoint(folder: str | Path, *, source: ModelSource, owned: bool = False,
                        origin: str | None = None, name: str | None = None,
                        plugin: str | None = None) -> FoundModel:
    """Check ``folder`` and read its facts; ``plugin`` overrides the plugin chosen from config.json."""
    from ...weights import WeightLoadError, read_header

    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidModelError(f"{folder}: no such checkpoint folder")
    config = read_config(folder)
    elements: Counter[str] = Counter()
    for file in safetensors_files(folder):
        try:
            header = read_header(file)
        except WeightLoadError as e:
            raise InvalidModelError(str(e)) from e
        for entry in header.values():
            count = 1
            for dim in entry.shape:
                count *= dim
            elements[entry.dtype] += count
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    causal = any(str(a).endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for a in architectures)
    if not architectures:  # a bare config: decoders are the common case, encoders say so in model_type
        causal = model_type not in ("bert", "roberta", "xlm-roberta", "nomic_bert")
    stored = elements.most_common(1)[0][0] if elements else None
    return FoundModel(
        path=folder, format=ModelFormat.SAFETENSORS, source=source, name=name or name_from(folder.name),
        size_bytes=size_on_disk(folder), architecture=model_type or (architectures[0] if architectures else None),
        parameter_count=sum(elements.values()) or None,
        dtype=_SAFETENSORS_DTYPES.get(stored, stored.lower() if stored else None),
        capabilities=capabilities_for(model_type, causal=causal, chat_template=_has_chat_template(folder)),
        plugin=plugin or plugin_for(config), owned=owned, origin=origin or str(folder),
    )


def _has_chat_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        return "chat_template" in json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
