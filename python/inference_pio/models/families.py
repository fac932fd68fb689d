"""Telling a model's family (``ModelType``) from what its files say.

The checkpoint's own words come first (config.json ``model_type`` / ``architectures``, GGUF
``general.architecture``); DeepSeek models often use the Llama architecture, so a name that
says ``deepseek`` wins over an architecture that says ``llama``.
"""

from __future__ import annotations

from .types import ModelType

# model_type / general.architecture -> family; prefixes cover versions (qwen2, qwen3, qwen2_moe, ...).
_ARCHITECTURE_PREFIXES: tuple[tuple[str, ModelType], ...] = (
    ("deepseek", ModelType.DEEPSEEK),
    ("llama", ModelType.LLAMA),
    ("mistral", ModelType.MISTRAL),
    ("mixtral", ModelType.MISTRAL),
    ("qwen", ModelType.QWEN),
    ("bert", ModelType.BERT),
    ("nomic-bert", ModelType.BERT),
)


def family_from_architecture(architecture: str | None) -> ModelType | None:
    """``"qwen2"`` -> QWEN, ``"LlamaForCausalLM"`` -> LLAMA; None when unknown."""
    if not architecture:
        return None
    key = architecture.lower()
    for prefix, family in _ARCHITECTURE_PREFIXES:
        if key.startswith(prefix):
            return family
    return None


def detect_family(
    *architectures: str | None, name: str | None = None, default: ModelType | None = None
) -> ModelType | None:
    """The family from a model name and its architecture strings, in that order of trust for DeepSeek."""
    if name and "deepseek" in name.lower():
        return ModelType.DEEPSEEK
    for architecture in architectures:
        family = family_from_architecture(architecture)
        if family is not None:
            return family
    return default
