"""Telling a model's family (``ModelType``) from what its files say, by the installed plugins' manifests.

The checkpoint's own words come first, except for a maker that publishes checkpoints in another
family's architecture (DeepSeek: deepseek-coder and deepseek-llm are Llama checkpoints, the R1
distills Llama and Qwen ones): its name wins (the plugin is still chosen by the architecture, only
the label moves). The checkpoint's own words (config.json ``model_type`` / ``architectures``,
GGUF ``general.architecture``): a string a manifest lists exactly, else one with a word that
begins with a family's model type or key (``qwen2_moe`` -> qwen, ``LlamaForCausalLM`` -> llama,
``nomic-bert`` -> bert).
"""

from __future__ import annotations

import re

from ..plugin.families import slug
from .types import ModelType, _families


def _begins_a_word(stem: str, text: str) -> bool:
    """Whether ``stem`` begins ``text`` or one of its words (both compared as slugs)."""
    return re.search(rf"(?:^|-){re.escape(slug(stem))}", slug(text)) is not None


def family_from_architecture(architecture: str | None) -> ModelType | None:
    """``"qwen2"`` -> QWEN, ``"LlamaForCausalLM"`` -> LLAMA; None when no installed plugin's family fits."""
    if not architecture:
        return None
    families = _families().values()
    for family in families:
        if architecture in family.model_types or architecture in family.architectures:
            return ModelType(family.key)
    key = architecture.lower()
    # Longest first, so a model type ("qwen2") is preferred over a shorter key it starts with.
    stems = sorted(((stem.lower(), f.key) for f in families for stem in (*f.model_types, f.key)),
                   key=lambda pair: -len(pair[0]))
    for stem, family_key in stems:
        if _begins_a_word(stem, key):
            return ModelType(family_key)
    return None


# Makers whose checkpoints often come in another family's architecture (see the module's note):
# a fact about how models are published, used only when that family's plugin is installed.
_PUBLISHED_IN_OTHER_ARCHITECTURES = ("deepseek",)


def family_from_name(name: str | None) -> ModelType | None:
    """The installed family of a maker that publishes in borrowed architectures, when ``name`` begins a
    word with it (``deepseek-coder`` -> DEEPSEEK); else None."""
    if not name:
        return None
    families = _families()
    for key in _PUBLISHED_IN_OTHER_ARCHITECTURES:
        if key in families and _begins_a_word(key, name):
            return ModelType(key)
    return None


def detect_family(
    *architectures: str | None, name: str | None = None, default: ModelType | None = None
) -> ModelType | None:
    """The family from a model name and its architecture strings (see the module's note for the order)."""
    named = family_from_name(name)
    if named is not None:
        return named
    for architecture in architectures:
        family = family_from_architecture(architecture)
        if family is not None:
            return family
    return default
