"""A local ``.gguf`` file: its metadata read with the ``gguf`` package.

Family from ``general.architecture``, parameter count from the tensor element counts,
quantization from the type that holds most matrix elements (embeddings and norms are often
kept at higher precision, so the majority by elements is what the file "is").
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..errors import InvalidModelError
from ..types import ModelFormat, ModelSource
from .base import FoundModel, capabilities_for, name_from, plugin_for

GGUF_MAGIC = b"GGUF"
_FLOAT_TYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def describe_gguf(path: str | Path, *, source: ModelSource = ModelSource.GGUF, owned: bool = False,
                  origin: str | None = None, name: str | None = None) -> FoundModel:
    """Read and check the GGUF file ``path``; ``InvalidModelError`` names it when it is not a
    complete GGUF file (wrong magic, unreadable header, tensor data past the end of the file)."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise InvalidModelError(f"{path}: no such GGUF file")
    size = path.stat().st_size
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise InvalidModelError(f"{path}: not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
    try:
        reader = gguf.GGUFReader(path)
        # The vocabulary arrays are large and not needed here.
        fields = {key: field.contents() for key, field in reader.fields.items()
                  if not key.startswith("tokenizer.ggml.")}
        tensors = [(t.name, int(t.tensor_type), [int(d) for d in t.shape], int(t.n_elements),
                    int(t.data_offset), int(t.n_bytes)) for t in reader.tensors]
    except Exception as e:  # noqa: BLE001 -- the reader raises ValueError, IndexError, struct errors...
        raise InvalidModelError(f"{path}: corrupt GGUF file ({type(e).__name__}: {e})") from e
    if not tensors:
        raise InvalidModelError(f"{path}: GGUF file holds no tensors")
    for tensor_name, _, _, _, offset, n_bytes in tensors:
        if offset + n_bytes > size:
            raise InvalidModelError(f"{path}: truncated GGUF file: tensor {tensor_name!r} ends at byte "
                                    f"{offset + n_bytes}, the file has {size}")
    architecture = fields.get("general.architecture")
    if not isinstance(architecture, str) or not architecture:
        raise InvalidModelError(f"{path}: GGUF file has no general.architecture")
    dominant = _dominant_matrix_type(tensors)
    chat_template = "tokenizer.chat_template" in reader.fields
    return FoundModel(
        path=path, format=ModelFormat.GGUF, source=source,
        name=name or name_from(path.name),
        size_bytes=size, architecture=architecture,
        parameter_count=sum(t[3] for t in tensors),
        dtype=_FLOAT_TYPES.get(dominant), quantization=None if dominant in _FLOAT_TYPES else dominant,
        capabilities=capabilities_for(architecture, causal="bert" not in architecture, chat_template=chat_template),
        plugin=plugin_for({"model_type": architecture}), owned=owned, origin=origin or str(path),
    )


def _dominant_matrix_type(tensors) -> str:
    import gguf

    elements: Counter[int] = Counter()
    for _, kind, shape, n_elements, _, _ in tensors:
        if len(shape) >= 2:
            elements[kind] += n_elements
    if not elements:
        for _, kind, _, n_elements, _, _ in tensors:
            elements[kind] += n_elements
    kind = elements.most_common(1)[0][0]
    try:
        return gguf.GGMLQuantizationType(kind).name
    except ValueError:
        return f"type{kind}"
