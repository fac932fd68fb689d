"""``BaseConfig``: the dataclass every plugin's configuration derives from.

A plugin's config adds the model's fields (``hidden_size``, ``num_attention_heads``...)
with the names transformers uses in ``config.json``, so ``from_pretrained_config`` can fill
them directly; ``config_aliases`` maps the odd names (``n_embd``) onto fields. Derived
values are computed once in ``__post_init__`` (call ``super().__post_init__()`` first).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..messages import shorten
from .errors import ConfigError

Self = TypeVar("Self", bound="BaseConfig")

DTYPES = ("auto", "float32", "float16", "bfloat16")
# transformers writes "torch.float16" in some configs and "half"/"fp16" appear in user input.
_DTYPE_ALIASES = {
    "fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16",
    "bf16": "bfloat16",
}
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(kw_only=True)
class BaseConfig:
    """Fields shared by every model plugin.

    ``kw_only`` lets subclasses declare fields without defaults after these ones.

    Attributes:
        model_path: checkpoint folder (``config.json`` + safetensors), if any.
        dtype: weights and activations dtype: ``auto`` (the checkpoint's), ``float32``,
            ``float16`` or ``bfloat16``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        max_batch_size: sequences the engine schedules in one step.
        max_seq_len: longest sequence (prompt + generated tokens) served.
        kv_block_size: tokens per paged KV-cache block (a power of two).
        kv_cache_dtype: dtype of the KV cache; ``auto`` follows ``dtype``.
        seed: seed for sampling; ``None`` draws one.
    """

    model_path: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    max_batch_size: int = 8
    max_seq_len: int = 4096
    kv_block_size: int = 16
    kv_cache_dtype: str = "auto"
    seed: int | None = None

    # config.json key -> field name, for keys whose name differs from ours.
    config_aliases: ClassVar[dict[str, str]] = {"torch_dtype": "dtype"}

    def __post_init__(self) -> None:
        name = type(self).__name__
        # torch dtypes (as transformers users pass them) become their names before the type check.
        self.dtype = dtype_name(self.dtype, f"{name}.dtype")
        self.kv_cache_dtype = dtype_name(self.kv_cache_dtype, f"{name}.kv_cache_dtype")
        self._check_field_types()
        if not _DEVICE.match(self.device):
            raise ConfigError(
                f"{name}.device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )
        for field_name in ("max_batch_size", "max_seq_len", "kv_block_size"):
            value = getattr(self, field_name)
            if value <= 0:
                raise ConfigError(f"{name}.{field_name} must be positive, got {value}")
        if self.kv_block_size & (self.kv_block_size - 1):
            raise ConfigError(
                f"{name}.kv_block_size must be a power of two, got {self.kv_block_size}"
            )

    def _check_field_types(self) -> None:
        """Check fields annotated with a plain type (``int``, ``float | None``...).

        Values often come from JSON, where a wrong type would otherwise surface deep in
        the model as an unrelated error. ``int`` is accepted where ``float`` is declared;
        ``bool`` is never accepted as a number.
        """
        try:
            hints = typing.get_type_hints(type(self))
        except (NameError, TypeError):
            # A class defined where its annotations cannot be resolved: check what we can.
            hints = {}
        for field in dataclasses.fields(self):
            allowed = _plain_types(hints.get(field.name, field.type))
            if allowed is None:
                continue
            value = getattr(self, field.name)
            if _is_instance(value, allowed) and type(value) is int and int not in allowed:
                setattr(self, field.name, float(value))  # JSON writes 1e-05 but also 1
            elif not _is_instance(value, allowed):
                names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
                raise ConfigError(
                    f"{type(self).__name__}.{field.name} must be {names}, "
                    f"got {type(value).__name__} {shorten(value)}"
                )

    def check_positive(self, *names: str) -> None:
        """Raise ``ConfigError`` naming the first of the fields ``names`` that is set but not > 0 (and
        finite): sizes, head counts, epsilons. A zero or negative size would surface as a
        ZeroDivisionError or torch's "negative dimension" deep in the model."""
        for field_name in names:
            value = getattr(self, field_name)
            if value is not None and not (value > 0 and (not isinstance(value, float) or math.isfinite(value))):
                raise ConfigError(f"{type(self).__name__}.{field_name} must be positive, got {shorten(value)}")

    @classmethod
    def from_dict(cls: type[Self], data: dict[str, Any], **overrides: Any) -> Self:
        """Build from ``data``, keeping only keys that are fields of ``cls``; then ``overrides``."""
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        kwargs = {key: value for key, value in data.items() if key in names}
        unknown = set(overrides) - names
        if unknown:
            raise ConfigError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def from_pretrained_config(
        cls: type[Self], config_json: dict[str, Any], **overrides: Any
    ) -> Self:
        """Build from a transformers ``config.json`` dict; unknown keys are ignored.

        Keys named in ``config_aliases`` are renamed first (a key already named like the
        field wins over its alias).
        """
        data = dict(config_json)
        for alias, field_name in cls.config_aliases.items():
            if alias in data and field_name not in data:
                data[field_name] = data[alias]
        return cls.from_dict(data, **overrides)

    @classmethod
    def from_checkpoint(cls: type[Self], path: str | Path, **overrides: Any) -> Self:
        """Build from ``<path>/config.json`` with ``model_path`` set to the folder.

        Every bad value is a one-line ``ConfigError`` naming the file; sizes the checkpoint's
        tensors contradict (``check_checkpoint``) are refused before anything is allocated.
        """
        overrides.setdefault("model_path", str(path))
        file = Path(path) / "config.json" if Path(path).is_dir() else Path(path)
        data = read_config_json(path)
        with config_errors_named(file):
            config = cls.from_pretrained_config(data, **overrides)
        shapes = _checkpoint_shapes(path)
        if shapes is not None:
            config.check_checkpoint(shapes, file)
        return config

    def check_checkpoint(self, shapes: dict[str, tuple[int, ...]], where: str | Path) -> None:
        """Refuse sizes that the checkpoint's tensors (``shapes``, by transformers name) contradict
        and that would be allocated before the weights are read. Here: more layers than the
        checkpoint holds (a million layers would take minutes and gigabytes to build)."""
        layers = getattr(self, "num_hidden_layers", None)
        present = layers_present(shapes)
        if isinstance(layers, int) and present is not None and layers > present:
            raise ConfigError(f"{where}: num_hidden_layers = {layers}: the checkpoint holds the tensors of "
                              f"{present} layers")


@contextlib.contextmanager
def config_errors_named(where: str | Path) -> Iterator[None]:
    """Inside the block, a ``ConfigError`` or a stray error of building a config from a file's values
    (ZeroDivisionError, TypeError...) becomes a one-line ``ConfigError`` that names ``where``."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except (ArithmeticError, TypeError, ValueError, LookupError, AttributeError, RecursionError) as exc:
        raise ConfigError(f"{where}: {type(exc).__name__}: {shorten(str(exc), 300)}") from exc


_LAYER_INDEX = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|blk)\.(\d+)\.")


def layers_present(names: Iterable[str]) -> int | None:
    """How many numbered layers (``model.layers.N.``, ``blk.N.``...) tensor ``names`` hold: the highest
    index plus one; ``None`` when no name is numbered."""
    indices = [int(m.group(1)) for name in names if (m := _LAYER_INDEX.search(name))]
    return max(indices) + 1 if indices else None


def _checkpoint_shapes(path: str | Path) -> dict[str, tuple[int, ...]] | None:
    """Tensor shapes from the safetensors headers next to the config (no data read); ``None`` when
    there are none to read (loading the weights reports that)."""
    from ..weights import WeightLoadError, open_checkpoint

    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    try:
        return open_checkpoint(folder).shapes()
    except WeightLoadError:
        return None


def read_config_json(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint's ``config.json`` (``path`` is the folder or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such file (a checkpoint folder needs config.json)") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply to be a config") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a JSON object, found {type(data).__name__}")
    return data


def dtype_name(value: Any, where: str = "dtype") -> str:
    """The name in ``DTYPES`` of a dtype given as a string (``"bf16"``, ``"torch.float16"``) or a
    ``torch.dtype`` (``torch.bfloat16``); ``ConfigError`` naming ``where`` for anything else."""
    text = value
    if not isinstance(value, str):
        import torch  # only when a non-string arrives: the config module stays torch-free otherwise

        if not isinstance(value, torch.dtype):
            raise ConfigError(f"{where} must be a str or a torch.dtype ({', '.join(DTYPES)}), "
                              f"got {type(value).__name__} {value!r}")
        text = str(value)
    name = text.removeprefix("torch.")
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise ConfigError(f"{where} must be one of {', '.join(DTYPES)} (or the torch dtype), got {value!r}")
    return name


_PLAIN = (int, float, str, bool)


def _plain_types(hint: Any) -> tuple[type, ...] | None:
    """``(int,)`` for ``int``, ``(float, NoneType)`` for ``float | None``; ``None`` for others."""
    if hint in _PLAIN:
        return (hint,)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if all(a in _PLAIN or a is type(None) for a in args):
            return args
    return None


def _is_instance(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    if isinstance(value, int) and float in allowed:
        return True
    return isinstance(value, allowed)
