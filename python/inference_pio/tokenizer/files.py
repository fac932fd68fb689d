"""What a checkpoint folder says about its tokenizer besides the vocabulary: JSON config files,
special-token names and ids, and where the chat template is."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# Files besides tokenizer.json from which transformers can build a tokenizer.
OTHER_TOKENIZER_FILES = (
    "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json", "vocab.txt", "merges.txt",
    "tiktoken.model",
)
SPECIAL_NAMES = ("bos_token", "eos_token", "pad_token", "unk_token")



def read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    except RecursionError:
        raise ValueError(f"{path} is JSON nested too deeply to be a tokenizer file") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def token_content(value: Any) -> str | None:
    """A special token in tokenizer_config.json is a string or a serialized AddedToken dict."""
    if isinstance(value, Mapping):
        value = value.get("content")
    return value if isinstance(value, str) else None


def id_list(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    raise ValueError(f"a token id must be an int or a list of ints, got {value!r}")


def find_chat_template(folder: Path, config: Mapping[str, Any]) -> str | None:
    """The default template: chat_template.jinja, then chat_template.json, then tokenizer_config.json."""
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = read_json(folder / "chat_template.json").get("chat_template", config.get("chat_template"))
    if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]: the one named "default"
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, Mapping)}
        template = named.get("default")
    return template if isinstance(template, str) else None
