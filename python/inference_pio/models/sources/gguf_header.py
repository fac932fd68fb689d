"""A fast, checked reader of a GGUF file's header: metadata scalars and the tensor table.

``gguf.GGUFReader`` builds a numpy view for every element of every metadata array, which takes
~6 s for SmolLM2's 49k-token vocabulary here (and scales with the vocabulary and merges). The
manager needs only scalars and the tensor table, so this walks the header once, skipping arrays
by their byte length, with the gguf package's own type tables. Every count and length is
checked against the file size, so a corrupt header is an error, never a huge allocation.

Layout (little- or big-endian, version 2 or 3): magic ``GGUF``, version u32, tensor count u64,
metadata count u64; metadata entries (key string, value type u32, value); tensor infos (name,
n_dims u32, dims u64 innermost first, ggml type u32, offset u64 from the aligned data start).
Strings are a u64 byte length then UTF-8 bytes.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class GGUFHeaderError(ValueError):
    """The bytes do not form a GGUF header; the message says where it went wrong."""


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One tensor: ``shape`` innermost first (as stored), ``ggml_type`` a ``GGMLQuantizationType``
    value, ``data_start``/``n_bytes`` its absolute byte range in the file."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    data_start: int
    n_bytes: int

    @property
    def n_elements(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: dict[str, Any]  # scalars and strings; arrays as ("array", element type, count)
    tensors: list[GGUFTensorInfo]
    file_size: int


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """Parse and check the header of ``path``; ``GGUFHeaderError`` names the first problem."""
    import gguf

    with open(path, "rb") as f:
        if Path(path).stat().st_size < 24:
            raise GGUFHeaderError("not a GGUF file (shorter than a GGUF header)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _Parser(data, gguf).parse()


class _Parser:
    def __init__(self, data, gguf):
        self.data, self.gguf, self.pos, self.end = data, gguf, 0, len(data)

    def parse(self) -> GGUFHeader:
        if self.end < 24 or self.data[:4] != b"GGUF":
            raise GGUFHeaderError("not a GGUF file (no 'GGUF' magic)")
        self.order = "<"
        self.pos = 4
        version = self.scalar("I")
        if version & 0xFFFF == 0:  # written big-endian
            self.order, self.pos = ">", 4
            version = self.scalar("I")
        if version not in (2, 3):
            raise GGUFHeaderError(f"GGUF version {version} is not supported (2 or 3)")
        n_tensors, n_metadata = self.scalar("Q"), self.scalar("Q")
        self.bounded(n_tensors, 24, "tensor count")  # every entry takes at least this many bytes
        self.bounded(n_metadata, 12, "metadata count")
        metadata = {}
        for _ in range(n_metadata):
            key = self.string()
            metadata[key] = self.value(self.scalar("I"), key)
        infos = []
        for _ in range(n_tensors):
            name = self.string()
            n_dims = self.scalar("I")
            if n_dims > 8:
                raise GGUFHeaderError(f"tensor {name!r} has {n_dims} dimensions")
            shape = tuple(self.scalar("Q") for _ in range(n_dims))
            infos.append((name, shape, self.scalar("I"), self.scalar("Q")))
        alignment = metadata.get("general.alignment", self.gguf.GGUF_DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0:
            raise GGUFHeaderError(f"general.alignment is {alignment!r}")
        data_start = -(-self.pos // alignment) * alignment
        return GGUFHeader(version, metadata, [self.tensor(data_start, *info) for info in infos], self.end)

    def tensor(self, data_start: int, name: str, shape: tuple[int, ...], kind: int, offset: int) -> GGUFTensorInfo:
        try:
            block, block_bytes = self.gguf.GGML_QUANT_SIZES[self.gguf.GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise GGUFHeaderError(f"tensor {name!r} has unknown ggml type {kind}") from None
        info = GGUFTensorInfo(name, shape, kind, data_start + offset, 0)
        if not shape or info.n_elements % block:
            raise GGUFHeaderError(f"tensor {name!r} shape {list(shape)} does not fit {block}-element blocks")
        info = GGUFTensorInfo(name, shape, kind, data_start + offset, info.n_elements // block * block_bytes)
        if info.data_start + info.n_bytes > self.end:
            raise GGUFHeaderError(f"truncated: tensor {name!r} ends at byte {info.data_start + info.n_bytes}, "
                                  f"the file has {self.end}")
        return info

    def scalar(self, code: str):
        size = struct.calcsize(code)
        if self.pos + size > self.end:
            raise GGUFHeaderError(f"header runs past the end of the file at byte {self.pos}")
        (value,) = struct.unpack_from(self.order + code, self.data, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        length = self.scalar("Q")
        self.bounded(length, 1, "string length")
        raw = self.data[self.pos:self.pos + length]
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFHeaderError(f"string at byte {self.pos - length} is not UTF-8") from None

    def value(self, kind: int, key: str):
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise GGUFHeaderError(f"metadata {key!r} has unknown value type {kind}")
        element, count = self.scalar("I"), self.scalar("Q")
        if element in _SCALARS:  # fixed-size elements: skip them in one step
            self.bounded(count, struct.calcsize(_SCALARS[element]), f"{key} array length")
            self.pos += count * struct.calcsize(_SCALARS[element])
        elif element == _STRING:
            self.bounded(count, 8, f"{key} array length")
            for _ in range(count):
                length = self.bounded(self.scalar("Q"), 1, f"{key} string length")
                self.pos += length
        elif element == _ARRAY:
            self.bounded(count, 12, f"{key} array length")
            for _ in range(count):
                self.value(_ARRAY, key)
        else:
            raise GGUFHeaderError(f"metadata {key!r} is an array of unknown type {element}")
        return ("array", element, count)

    def bounded(self, count: int, unit: int, what: str) -> int:
        if count * unit > self.end - self.pos:
            raise GGUFHeaderError(f"{what} {count} at byte {self.pos} runs past the end of the file")
        return count
