"""Opening a GGUF file: its metadata, its tensor table, and memory-mapped tensor bytes.

The ``gguf`` package's ``GGUFReader`` builds a numpy view for every element of every metadata
array: 1.5 s on an idle machine (6-12 s on a busy one) for SmolLM2's 49k-token vocabulary and
merges, before a single weight is read. This reader walks the header once with ``struct`` over a
memory map (~0.1 s) and uses the gguf package's own type tables (``GGML_QUANT_SIZES``); tensor data
stays in the map until the loader copies it. Every count, length and byte range is checked against
the file size, so a truncated or corrupt file is a ``WeightLoadError`` naming the file, never a
numpy error, a crash or a huge allocation. The tests check it against ``GGUFReader``.

Before anything is built, the file must also be well formed the way llama.cpp writes it: keys and
tensor names unique, 1 to 4 dimensions of 1 to 2^63 - 1 elements (sizes in Python integers, so no
product wraps), ``general.alignment`` a power of two, and tensors packed one after the other at
aligned offsets, sized by their type (so bytes relabelled with another type are caught: the chain
breaks). ``tests/gguf/hostile.py`` writes a file for each of these attacks.

Layout (version 2 or 3, little-endian): magic ``GGUF``, version u32, tensor count u64, metadata
count u64; metadata entries (key string, value type u32, value); tensor infos (name, n_dims u32,
dims u64 innermost first, ggml type u32, offset u64 from the aligned data start). Strings are a
u64 byte length then UTF-8 bytes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import WeightLoadError, shorten

GGUF_MAGIC = b"GGUF"
GGUF_SUFFIX = ".gguf"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS

# gguf.GGUFValueType ids of fixed-size values -> struct / numpy format (little-endian).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of the table: ``shape`` in torch order (outermost first; ggml stores the reverse),
    ``ggml_type`` a ``gguf.GGMLQuantizationType`` value, ``offset``/``n_bytes`` its bytes in the file."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int
    n_bytes: int


class GGUFFile:
    """A parsed GGUF file: ``metadata`` (key -> str / int / float / bool / list), ``tensors`` (in file
    order), ``data(tensor)`` (its bytes, a read-only uint8 view of the memory map)."""

    def __init__(self, path: Path, version: int, metadata: dict[str, Any], tensors: list[GGUFTensor]):
        self.path, self.version, self.metadata, self.tensors = path, version, metadata, tensors
        self._map: np.memmap | None = None

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    def tensor(self, name: str) -> GGUFTensor | None:
        return next((t for t in self.tensors if t.name == name), None)

    def data(self, tensor: GGUFTensor) -> np.ndarray:
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._map[tensor.offset:tensor.offset + tensor.n_bytes]

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, {self.architecture!r}, {len(self.tensors)} tensors)"


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


def open_gguf(path: str | Path) -> GGUFFile:
    """Parse and check the GGUF file at ``path`` (a ``GGUFFile`` passes through unchanged).

    Raises ``WeightLoadError`` naming the file when it is missing, not GGUF (bad magic), of an
    unsupported version, or truncated / corrupt.
    """
    if isinstance(path, GGUFFile):
        return path
    path = Path(path)
    if not path.is_file():
        raise WeightLoadError(f"{path}: no such GGUF file")
    try:
        data = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
        return _Parser(path, memoryview(data)).parse()
    except OSError as exc:
        raise WeightLoadError(f"{path}: cannot be read: {exc}") from exc


def read_gguf_architecture(path: str | Path) -> str:
    """``general.architecture`` of the GGUF file at ``path``."""
    gguf = open_gguf(path)
    if not isinstance(gguf.architecture, str):
        raise WeightLoadError(f"{gguf.path}: the GGUF metadata has no general.architecture")
    return gguf.architecture


class _Parser:
    def __init__(self, path: Path, data: memoryview):
        self.path, self.data, self.pos, self.end = path, data, 0, len(data)

    def fail(self, what: str):
        raise WeightLoadError(f"{self.path}: {what}")

    def parse(self) -> GGUFFile:
        if bytes(self.data[:4]) != GGUF_MAGIC:
            self.fail(f"not a GGUF file (starts with {bytes(self.data[:4])!r}, expected {GGUF_MAGIC!r})")
        self.pos = 4
        version = self.scalar("I")
        if version not in (2, 3):
            self.fail(f"GGUF version {version} is not supported (2 and 3 are; a big-endian file is not)")
        n_tensors, n_metadata = self.scalar("Q"), self.scalar("Q")
        self.bounded(n_tensors, 24, "tensor count")
        self.bounded(n_metadata, 12, "metadata count")
        metadata = {}
        for _ in range(n_metadata):
            key = self.string()
            if key in metadata:
                self.fail(f"metadata key {shorten(key)} appears twice")
            metadata[key] = self.value(self.scalar("I"), key)
        infos, names = [], set()
        for _ in range(n_tensors):
            name = self.string()
            if name in names:
                self.fail(f"tensor {shorten(name)} appears twice in the tensor table")
            names.add(name)
            n_dims = self.scalar("I")
            if not 1 <= n_dims <= MAX_DIMS:
                self.fail(f"tensor {shorten(name)} has {n_dims} dimensions (1 to {MAX_DIMS} are possible): "
                          "the file is corrupt")
            dims = tuple(self.scalar("Q") for _ in range(n_dims))
            infos.append((name, dims, self.scalar("I"), self.scalar("Q")))
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
            self.fail(f"general.alignment is {shorten(alignment)}: it must be a power of two")
        data_start = _align(self.pos, alignment)
        tensors = [self.tensor(data_start, *info) for info in infos]
        self.check_layout(tensors, data_start, alignment)
        return GGUFFile(self.path, version, metadata, tensors)

    def tensor(self, data_start: int, name: str, dims: tuple[int, ...], kind: int, offset: int) -> GGUFTensor:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        try:
            block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            self.fail(f"tensor {shorten(name)} has unknown ggml type {kind}: the file is corrupt or too new")
        if 0 in dims or max(dims) >= 1 << 63:  # ggml keeps dimensions in int64
            self.fail(f"tensor {shorten(name)} has shape {list(dims[::-1])}: a dimension is 0 or past 2^63")
        elements = math.prod(dims)  # Python ints: a product that would wrap in uint64 stays huge
        if dims[0] % block:
            self.fail(f"tensor {shorten(name)} of shape {list(dims[::-1])} does not fit {block}-element blocks: "
                      "the file is corrupt")
        tensor = GGUFTensor(name, dims[::-1], kind, data_start + offset, elements // block * block_bytes)
        if tensor.offset + tensor.n_bytes > self.end:
            self.fail(f"tensor {shorten(name)} ends at byte {tensor.offset + tensor.n_bytes} but the file has {self.end} "
                      "bytes: the file is truncated")
        return tensor

    def check_layout(self, tensors: list[GGUFTensor], data_start: int, alignment: int) -> None:
        """Tensors follow each other in table order, each at the next multiple of ``alignment`` after
        the previous one's bytes (as llama.cpp writes and checks them): no overlap, no gap, and the
        file ends within the padding after the last one. A tensor whose type was relabelled to one
        with other block sizes (Q4_1 bytes called Q4_0) breaks this chain."""
        expected = data_start
        for tensor in tensors:
            if tensor.offset != expected:
                relation = "overlaps the tensor before it" if tensor.offset < expected else "leaves a gap"
                self.fail(f"tensor {shorten(tensor.name)} ({_type_name(tensor.ggml_type)}, shape {list(tensor.shape)}) "
                          f"starts at byte {tensor.offset}, expected {expected}: it {relation} (tensors must follow "
                          f"each other, aligned to {alignment} bytes); the file is corrupt or its tensor types are wrong")
            expected = _align(tensor.offset + tensor.n_bytes, alignment)
        end = tensors[-1].offset + tensors[-1].n_bytes if tensors else data_start
        if self.end > _align(end, alignment):
            last = f"after tensor {shorten(tensors[-1].name)} ({_type_name(tensors[-1].ggml_type)})" if tensors else ""
            self.fail(f"{self.end - end} bytes follow the tensor data {last}: the file is corrupt or its tensor "
                      "types are wrong")

    def scalar(self, code: str):
        size = struct.calcsize(code)
        if self.pos + size > self.end:
            self.fail(f"the GGUF header ends early at byte {self.pos}: the file is truncated")
        (value,) = struct.unpack_from("<" + code, self.data, self.pos)
        self.pos += size
        return value

    def string(self) -> str:
        length = self.bounded(self.scalar("Q"), 1, "string length")
        raw = bytes(self.data[self.pos:self.pos + length])
        self.pos += length
        # llama.cpp vocabularies hold tokens that are not valid UTF-8 on their own; keep them readable.
        return raw.decode("utf-8", errors="replace")

    def value(self, kind: int, key: str) -> Any:
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            self.fail(f"metadata {shorten(key)} has unknown value type {kind}: the file is corrupt")
        element, count = self.scalar("I"), self.scalar("Q")
        if element == _ARRAY:
            self.fail(f"metadata {shorten(key)} is an array of arrays: GGUF readers support none")
        if element in _SCALARS:  # fixed-size elements: one numpy read
            dtype = np.dtype("<" + _SCALARS[element])
            self.bounded(count, dtype.itemsize, f"{shorten(key)} array length")
            values = np.frombuffer(self.data, dtype, count, self.pos)
            self.pos += count * dtype.itemsize
            return values.tolist()
        self.bounded(count, 8 if element == _STRING else 12, f"{shorten(key)} array length")
        return [self.value(element, key) for _ in range(count)]

    def bounded(self, count: int, unit: int, what: str) -> int:
        if count * unit > self.end - self.pos:
            self.fail(f"{what} {count} at byte {self.pos} runs past the end of the file: it is truncated or corrupt")
        return count


def _align(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


def _type_name(kind: int) -> str:
    from gguf import GGMLQuantizationType

    return GGMLQuantizationType(kind).name
