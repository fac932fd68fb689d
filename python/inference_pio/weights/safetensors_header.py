"""Reading and checking a safetensors file's header before safetensors itself opens it.

Layout: 8 bytes little-endian header length N, N bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``), then
the data section, offsets relative to its start. Checking the offsets against the file
size turns a truncated download into an error naming the file and the first tensor cut
off, instead of a failure (or a crash) deep inside the reader.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import WeightLoadError

# safetensors refuses larger headers; so do we, before reading them into memory.
MAX_HEADER_BYTES = 100_000_000

DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "F64": 8,
}


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header: dtype name, shape, byte range in the data section."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def read_header(path: str | Path) -> dict[str, TensorEntry]:
    """Read and check the header of ``path``; return its tensors by name.

    Raises ``WeightLoadError`` naming the file for: a file shorter than 8 bytes, a header
    length beyond the file, a header that is not a JSON object, malformed tensor entries,
    byte ranges that do not match dtype × shape, and data that ends past the file end.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            if size < 8:
                raise WeightLoadError(f"{path}: {size} bytes, too short for a safetensors file")
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > MAX_HEADER_BYTES:
                raise WeightLoadError(
                    f"{path}: header length {header_len} is over {MAX_HEADER_BYTES} bytes "
                    "(corrupt file, or not safetensors)"
                )
            if 8 + header_len > size:
                raise WeightLoadError(
                    f"{path}: header length {header_len} goes beyond the file size {size} "
                    "(truncated file, or not safetensors)"
                )
            raw = f.read(header_len)
    except OSError as exc:
        raise WeightLoadError(f"{path}: cannot be read: {exc}") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightLoadError(
            f"{path}: the header is not valid JSON ({exc}); corrupt file"
        ) from exc
    if not isinstance(header, dict):
        raise WeightLoadError(f"{path}: the header is not a JSON object; corrupt file")
    data_size = size - 8 - header_len
    return {
        name: _check_entry(path, name, entry, data_size)
        for name, entry in header.items()
        if name != "__metadata__"
    }


def _check_entry(path: Path, name: str, entry: object, data_size: int) -> TensorEntry:
    where = f"{path}: tensor {name!r}"
    if not isinstance(entry, dict):
        raise WeightLoadError(f"{where}: header entry is not an object; corrupt file")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        raise WeightLoadError(f"{where}: header entry has no dtype; corrupt file")
    if not (isinstance(shape, list) and all(_is_count(d) for d in shape)):
        raise WeightLoadError(f"{where}: invalid shape {shape!r}; corrupt file")
    if not (
        isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
        and offsets[0] <= offsets[1]
    ):
        raise WeightLoadError(f"{where}: invalid data_offsets {offsets!r}; corrupt file")
    begin, end = offsets
    if end > data_size:
        raise WeightLoadError(
            f"{where}: data ends at byte {end} of the data section but the file holds only "
            f"{data_size} data bytes: the file is truncated"
        )
    itemsize = DTYPE_BYTES.get(dtype)
    if itemsize is not None and end - begin != math.prod(shape) * itemsize:
        raise WeightLoadError(
            f"{where}: {end - begin} bytes for {dtype} {shape} (expected "
            f"{math.prod(shape) * itemsize}); corrupt file"
        )
    return TensorEntry(dtype, tuple(shape), begin, end)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
