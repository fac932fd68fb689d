"""What a sentence-transformers folder says about turning token states into one vector.

``modules.json`` lists the pipeline (Transformer -> Pooling -> optional Normalize),
``1_Pooling/config.json`` (the Pooling module's folder) the pooling modes, and
``sentence_bert_config.json`` the truncation length and lower-casing. A plain transformers
folder without them gets sentence-transformers' own default: mean pooling, no normalization.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference_pio.plugin import ConfigError

# sentence-transformers concatenates the pooled vectors in this order when several modes are on.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max", "pooling_mode_mean_tokens": "mean",
                 "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                 "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
_MODULE_PREFIX = "sentence_transformers.models."
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class SentenceEmbeddingConfig:
    """Pooling modes (in ``POOLING_MODES`` order), L2 normalization, truncation and lower-casing."""

    pooling_modes: tuple[str, ...] = ("mean",)
    normalize: bool = False
    max_seq_length: int | None = None
    do_lower_case: bool = False

    def __post_init__(self) -> None:
        unknown = [m for m in self.pooling_modes if m not in POOLING_MODES]
        if unknown or not self.pooling_modes:
            raise ConfigError(f"pooling modes must be a non-empty subset of {', '.join(POOLING_MODES)}, "
                              f"got {list(self.pooling_modes)}")
        if self.max_seq_length is not None and self.max_seq_length < 2:
            raise ConfigError(f"max_seq_length must be at least 2 (room for the special tokens), got {self.max_seq_length}")

    @classmethod
    def from_folder(cls, folder: str | Path) -> "SentenceEmbeddingConfig":
        """Read ``folder``'s sentence-transformers files; ``ConfigError`` names a broken or unsupported one."""
        folder = Path(folder)
        modules = _read_json(folder / "modules.json", list)
        if modules is None:
            return cls(**_bert_options(folder))
        modes: tuple[str, ...] = ("mean",)
        normalize = False
        for module in modules:
            kind = module.get("type", "") if isinstance(module, dict) else ""
            name = kind.removeprefix(_MODULE_PREFIX)
            if name not in _SUPPORTED_MODULES:
                raise ConfigError(f"{folder / 'modules.json'}: module {kind or module!r} is not supported "
                                  f"(only {', '.join(_SUPPORTED_MODULES)})")
            path = folder / module.get("path", "")
            if name == "Transformer" and path.resolve() != folder.resolve():
                raise ConfigError(f"{folder / 'modules.json'}: the Transformer module must be the folder itself, "
                                  f"found path {module.get('path')!r}")
            if name == "Pooling":
                modes = _pooling_modes(path / "config.json")
            normalize |= name == "Normalize"
        return cls(modes, normalize, **_bert_options(folder))


def _read_json(path: Path, kind: type) -> Any:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read as JSON: {exc}") from exc
    if not isinstance(data, kind):
        raise ConfigError(f"{path}: must hold a JSON {kind.__name__}, found {type(data).__name__}")
    return data


def _pooling_modes(path: Path) -> tuple[str, ...]:
    data = _read_json(path, dict)
    if data is None:
        raise ConfigError(f"{path}: missing (modules.json names a Pooling module there)")
    modes = tuple(mode for key, mode in _POOLING_KEYS.items() if data.get(key))
    if not modes:
        raise ConfigError(f"{path}: no supported pooling mode is switched on ({', '.join(_POOLING_KEYS)})")
    return modes


def _bert_options(folder: Path) -> dict[str, Any]:
    data = _read_json(folder / "sentence_bert_config.json", dict) or {}
    length = data.get("max_seq_length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int)):
        raise ConfigError(f"{folder / 'sentence_bert_config.json'}: max_seq_length must be an int, got {length!r}")
    return {"max_seq_length": length, "do_lower_case": bool(data.get("do_lower_case", False))}
