"""The model manager's vocabulary: model families, formats, sources, and ``ModelInfo``.

Model ids read ``local/<family>/<name>`` (the seed's form) for local models and
``<provider>/<model>`` (``openai/gpt-4o``) for remote ones.
"""

from __future__ import annotations

import enum
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..plugin.families import family_identifier, installed_manager


class _FamilyMeta(type):
    """Makes ``ModelType`` read like the seed's enum (``ModelType.LLAMA``, ``ModelType("qwen")``,
    ``for family in ModelType``) while its members come from the installed plugins' manifests."""

    def __call__(cls, value):
        if isinstance(value, cls):
            return value
        key = value.value if isinstance(value, enum.Enum) else value
        if isinstance(key, str) and (key == CUSTOM or key in _families()):
            return cls._member(key)
        known = ", ".join(m.value for m in cls)
        raise ValueError(f"{value!r} is not a valid ModelType (the installed plugins' families: {known})")

    def __getattr__(cls, name: str):
        if name.isupper():
            for key in (*_families(), CUSTOM):
                if family_identifier(key) == name:
                    return cls._member(key)
        raise AttributeError(f"ModelType has no family {name} (none of the installed plugins declares it)")

    def __iter__(cls):
        return iter([cls._member(key) for key in (*_families(), CUSTOM)])

    def __len__(cls) -> int:
        return len(_families()) + 1

    def __contains__(cls, value) -> bool:
        return isinstance(value, str) and (value == CUSTOM or value in _families())


class ModelType(str, metaclass=_FamilyMeta):
    """A model family; the value is the family segment of a model id (``local/<family>/<name>``).

    The families are those of the installed plugins' manifests (``model_family``, lower case:
    ``llama``, ``deepseek``, ``mistral``, ``qwen``, ``bert`` with the built-in plugins), plus
    ``custom`` for models no plugin family claims. A plugin folder that declares a new family
    adds it here without any edit: ``ModelType("phi")`` / ``ModelType.PHI``. Members are unique
    per value (``ModelType("llama") is ModelType.LLAMA``) and compare equal to their string.
    """

    _members: dict[str, "ModelType"] = {}
    _members_lock = threading.Lock()

    @classmethod
    def _member(cls, key: str) -> "ModelType":
        with cls._members_lock:
            member = cls._members.get(key)
            if member is None:
                member = cls._members[key] = str.__new__(cls, key)
            return member

    @classmethod
    def stored(cls, value: str) -> "ModelType":
        """The family of a catalogued model, kept even when no installed plugin declares it any more
        (a plugin uninstalled after its models were catalogued must not break the catalogue)."""
        if not isinstance(value, str) or not value:
            raise ValueError(f"a stored model family must be a non-empty str, got {value!r}")
        return cls._member(value)

    @property
    def value(self) -> str:
        return str.__str__(self)

    @property
    def name(self) -> str:
        return family_identifier(self.value)

    def __repr__(self) -> str:
        return f"<ModelType.{self.name}: {self.value!r}>"

    def __str__(self) -> str:
        return f"ModelType.{self.name}"

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    def __reduce__(self):
        return ModelType, (self.value,)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


CUSTOM = "custom"


def _families() -> dict:
    """The installed plugins' families (``"llama"`` -> ``plugin.families.Family``)."""
    return installed_manager().families()


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
