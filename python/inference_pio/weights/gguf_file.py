"""Opening a GGUF file and reading its metadata, with errors that name the file.

The ``gguf`` package's ``GGUFReader`` memory-maps the file and parses every metadata field and
tensor descriptor; on a truncated or corrupt file it raises numpy's reshape/dtype errors, which say
nothing about the file. ``open_gguf`` turns those into ``WeightLoadError``.

``read_gguf_architecture`` reads only as far as ``general.architecture`` (a few bytes, no mmap):
choosing a plugin should not pay for parsing a 50,000-token vocabulary.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

from .errors import WeightLoadError

GGUF_MAGIC = b"GGUF"
GGUF_SUFFIX = ".gguf"

# gguf.GGUFValueType ids of fixed-size values -> struct format (little-endian files).
_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
                   12: "<d"}
_STRING, _ARRAY = 8, 9


def is_gguf_file(path: str | Path) -> bool:
    """A path named ``*.gguf`` (existing or not, so a missing one is reported as a GGUF), or a file
    starting with the GGUF magic bytes."""
    path = Path(path)
    if path.suffix.lower() == GGUF_SUFFIX:
        return True
    if not path.is_file():
        return False
    try:
        with path.open("rb") as f:
            return f.read(4) == GGUF_MAGIC
    except OSError:
        return False


def open_gguf(path: str | Path):
    """A ``gguf.GGUFReader`` over ``path`` (memory-mapped, read-only).

    Raises ``WeightLoadError`` naming the file when it is missing, empty, not GGUF (bad magic), or
    truncated / corrupt (its descriptors point past the end, or do not parse).
    """
    from gguf import GGUFReader

    path = Path(path)
    if not path.is_file():
        raise WeightLoadError(f"{path}: no such GGUF file")
    _check_magic(path)
    try:
        return GGUFReader(path)
    except Exception as exc:  # numpy reshape / dtype errors on a cut or damaged file
        raise WeightLoadError(f"{path}: cannot be read as GGUF, the file is truncated or corrupt "
                              f"({type(exc).__name__}: {exc})") from exc


def field_value(reader, key: str, default: Any = None) -> Any:
    """The metadata value under ``key`` as a Python value (str, int, float, bool, or a list)."""
    field = reader.fields.get(key)
    if field is None:
        return default
    try:
        return field.contents()
    except Exception as exc:
        raise WeightLoadError(f"{reader.data.filename}: metadata field {key!r} is corrupt ({exc})") from exc


def read_gguf_architecture(path: str | Path) -> str:
    """``general.architecture`` of the GGUF file at ``path``, read from the header alone."""
    path = Path(path)
    if not path.is_file():
        raise WeightLoadError(f"{path}: no such GGUF file")
    try:
        with path.open("rb") as f:
            _check_magic(path, f.read(4))
            version, _tensor_count, kv_count = struct.unpack("<IQQ", _read(f, 20, path))
            if version not in (2, 3):
                raise WeightLoadError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
            for _ in range(kv_count):
                key = _read_string(f, path)
                (value_type,) = struct.unpack("<I", _read(f, 4, path))
                if key == "general.architecture" and value_type == _STRING:
                    return _read_string(f, path)
                _skip_value(f, value_type, path)
    except OSError as exc:
        raise WeightLoadError(f"{path}: cannot be read: {exc}") from exc
    raise WeightLoadError(f"{path}: the GGUF metadata has no general.architecture")


def _check_magic(path: Path, head: bytes | None = None) -> None:
    if head is None:
        with path.open("rb") as f:
            head = f.read(4)
    if head != GGUF_MAGIC:
        raise WeightLoadError(f"{path}: not a GGUF file (starts with {head!r}, expected {GGUF_MAGIC!r})")


def _read(f: BinaryIO, n: int, path: Path) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise WeightLoadError(f"{path}: the GGUF header ends early: the file is truncated")
    return data


def _read_string(f: BinaryIO, path: Path) -> str:
    (length,) = struct.unpack("<Q", _read(f, 8, path))
    if length > 1 << 30:
        raise WeightLoadError(f"{path}: a metadata string claims {length} bytes: the file is corrupt")
    return _read(f, length, path).decode("utf-8", errors="replace")


def _skip_value(f: BinaryIO, value_type: int, path: Path) -> None:
    if value_type in _SCALAR_FORMATS:
        _read(f, struct.calcsize(_SCALAR_FORMATS[value_type]), path)
    elif value_type == _STRING:
        _read_string(f, path)
    elif value_type == _ARRAY:
        item_type, count = struct.unpack("<IQ", _read(f, 12, path))
        if item_type in _SCALAR_FORMATS:
            f.seek(struct.calcsize(_SCALAR_FORMATS[item_type]) * count, 1)
        else:
            for _ in range(count):
                _skip_value(f, item_type, path)
    else:
        raise WeightLoadError(f"{path}: unknown GGUF metadata value type {value_type}: the file is corrupt")
