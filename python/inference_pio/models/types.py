"""The model manager's vocabulary: model families, formats, sources, and ``ModelInfo``.

Model ids read ``local/<family>/<name>`` (the seed's form) for local models and
``<provider>/<model>`` (``openai/gpt-4o``) for remote ones.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path


class ModelType(str, enum.Enum):
    """Model families our plugins serve; the value is the family segment of a model id."""

    LLAMA = "llama"
    DEEPSEEK = "deepseek"
    MISTRAL = "mistral"
    QWEN = "qwen"
    BERT = "bert"
    CUSTOM = "custom"


class ModelFormat(str, enum.Enum):
    SAFETENSORS = "safetensors"
    GGUF = "gguf"


class ModelSource(str, enum.Enum):
    HUGGINGFACE = "huggingface"
    GGUF = "gguf"
    OLLAMA = "ollama"
    CUSTOM = "custom"


def local_model_id(family: ModelType | str, name: str) -> str:
    return f"local/{ModelType(family).value}/{name}"


@dataclass(frozen=True)
class ModelInfo:
    """One catalogued local model.

    ``path``: the checkpoint folder (safetensors + config.json) or the ``.gguf`` file that
    ``inference_pio.load`` takes; ``quantization``: the GGUF type of most matrices (``Q4_1``) or
    None; ``dtype``: the stored float dtype of a safetensors checkpoint (``bfloat16``) or None;
    ``capabilities``: e.g. ``("generation", "chat", "embeddings")``; ``owned``: the files were
    downloaded by the manager (``remove_model`` deletes them) rather than imported from a place
    the user or another tool keeps; ``origin``: where it came from (a repo id, an Ollama
    ``name:tag``, the imported path).
    """

    id: str
    name: str
    family: ModelType
    source: ModelSource
    format: ModelFormat
    path: Path
    size_bytes: int
    parameter_count: int | None = None
    dtype: str | None = None
    quantization: str | None = None
    capabilities: tuple[str, ...] = field(default=("generation",))
    plugin: str | None = None
    owned: bool = False
    origin: str | None = None
