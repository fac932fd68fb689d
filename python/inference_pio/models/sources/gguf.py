"""A local ``.gguf`` file: its header read with the ``gguf`` package's type tables (``gguf_header``).

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
from .gguf_header import GGUFHeaderError, GGUFTensorInfo, read_gguf_header

_FLOAT_TYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def describe_gguf(path: str | Path, *, source: ModelSource = ModelSource.GGUF, owned: bool = False,
                  origin: str | None = None, name: str | None = None) -> FoundModel:
    """Read and check the GGUF file ``path``; ``InvalidModelError`` names it when it is not a
    complete GGUF file (wrong magic, unreadable header, tensor data past the end of the file)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidModelError(f"{path}: no such GGUF file")
    try:
        header = read_gguf_header(path)
    except GGUFHeaderError as e:
        text = str(e) if "not a GGUF file" in str(e) else f"corrupt GGUF file ({e})"
        raise InvalidModelError(f"{path}: {text}") from e
    if not header.tensors:
        raise InvalidModelError(f"{path}: GGUF file holds no tensors")
    architecture = header.metadata.get("general.architecture")
    if not isinstance(architecture, str) or not architecture:
        raise InvalidModelError(f"{path}: GGUF file has no general.architecture")
    dominant = _dominant_matrix_type(header.tensors)
    chat_template = isinstance(header.metadata.get("tokenizer.chat_template"), str)
    return FoundModel(
        path=path, format=ModelFormat.GGUF, source=source, name=name or name_from(path.name),
        size_bytes=header.file_size, architecture=architecture,
        parameter_count=sum(t.n_elements for t in header.tensors),
        dtype=_FLOAT_TYPES.get(dominant), quantization=None if dominant in _FLOAT_TYPES else dominant,
        capabilities=capabilities_for(architecture, causal="bert" not in architecture, chat_template=chat_template),
        plugin=plugin_for({"model_type": architecture}), owned=owned, origin=origin or str(path),
    )


def _dominant_matrix_type(tensors: list[GGUFTensorInfo]) -> str:
    import gguf

    elements: Counter[int] = Counter()
    for tensor in tensors:
        if len(tensor.shape) >= 2:
            elements[tensor.ggml_type] += tensor.n_elements
    if not elements:
        for tensor in tensors:
            elements[tensor.ggml_type] += tensor.n_elements
    return gguf.GGMLQuantizationType(elements.most_common(1)[0][0]).name
