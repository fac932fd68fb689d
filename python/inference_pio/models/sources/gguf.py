"""A local ``.gguf`` file, described from its header (``inference_pio.weights.gguf_file``).

Family from ``general.architecture``, parameter count from the tensor element counts,
quantization from the type that holds most matrix elements (embeddings and norms are often
kept at higher precision, so the majority by elements is what the file "is").
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

from ..errors import InvalidModelError
from ..types import ModelFormat, ModelSource
from .base import FoundModel, capabilities_for, name_from, plugin_for

_FLOAT_TYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


def describe_gguf(path: str | Path, *, source: ModelSource = ModelSource.GGUF, owned: bool = False,
                  origin: str | None = None, name: str | None = None) -> FoundModel:
    """Read and check the GGUF file ``path``; ``InvalidModelError`` names it when it is not a
    complete GGUF file (wrong magic, corrupt header, tensor data past the end of the file)."""
    from ...weights import WeightLoadError
    from ...weights.gguf_file import open_gguf

    path = Path(path)
    try:
        gguf_file = open_gguf(path)
    except WeightLoadError as e:
        raise InvalidModelError(str(e)) from e
    if not gguf_file.tensors:
        raise InvalidModelError(f"{path}: GGUF file holds no tensors")
    architecture = gguf_file.architecture
    if not isinstance(architecture, str) or not architecture:
        raise InvalidModelError(f"{path}: GGUF file has no general.architecture")
    counts = [(t.ggml_type, len(t.shape), math.prod(t.shape)) for t in gguf_file.tensors]
    dominant = _dominant_matrix_type(counts)
    return FoundModel(
        path=path, format=ModelFormat.GGUF, source=source, name=name or name_from(path.name),
        size_bytes=path.stat().st_size, architecture=architecture,
        parameter_count=sum(n for _, _, n in counts),
        dtype=_FLOAT_TYPES.get(dominant), quantization=None if dominant in _FLOAT_TYPES else dominant,
        capabilities=capabilities_for(architecture, causal="bert" not in architecture,
                                      chat_template=isinstance(gguf_file.get("tokenizer.chat_template"), str)),
        plugin=plugin_for({"model_type": architecture}), owned=owned, origin=origin or str(path),
    )


def _dominant_matrix_type(counts: list[tuple[int, int, int]]) -> str:
    """The ggml type name holding most elements of the matrices (of all tensors when there are none)."""
    import gguf

    elements: Counter[int] = Counter()
    for kind, n_dims, n_elements in counts:
        if n_dims >= 2:
            elements[kind] += n_elements
    if not elements:
        for kind, _, n_elements in counts:
            elements[kind] += n_elements
    return gguf.GGMLQuantizationType(elements.most_common(1)[0][0]).name
