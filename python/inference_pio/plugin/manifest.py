"""The ``plugin_manifest.json`` schema (pydantic) and its loader.

Every field of the plugin guide seed's example manifest, plus ``model_types``,
``architectures`` and ``capabilities`` for the engine. Unknown fields are refused so a
misspelt key fails loudly instead of being ignored. Types are strict: ``"8"`` is not a
number here. Version strings, version specifiers and requirement strings are checked
with ``packaging``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ManifestError
from .interface import ModelPluginMetadata, PluginType

MANIFEST_FILENAME = "plugin_manifest.json"


def _check_specifier(value: str | None) -> str | None:
    if value is not None:
        try:
            SpecifierSet(value)
        except InvalidSpecifier as exc:
            raise ValueError(f"not a version specifier such as '>=2.4': {value!r}") from exc
    return value


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class Compatibility(_Schema):
    """Where the plugin runs: version specifiers and the memory it needs (GiB)."""

    torch_version: str | None = None
    transformers_version: str | None = None
    python_version: str | None = None
    min_memory_gb: Annotated[float, Field(ge=0)] = 0.0

    _specifiers = field_validator("torch_version", "transformers_version", "python_version")(
        _check_specifier
    )


class EntryPoint(_Schema):
    """How to build the plugin: ``module`` (relative to the plugin package when it starts
    with a dot), the plugin ``class`` and the ``factory_function`` that returns an instance.
    Without a factory the class itself is called."""

    module: Annotated[str, Field(min_length=1)]
    class_name: Annotated[str, Field(alias="class", min_length=1)]
    factory_function: str | None = None


class PluginManifest(_Schema):
    """A validated plugin manifest."""

    name: Annotated[str, Field(min_length=1)]
    version: str
    author: str
    description: str
    # The manifest stores the member's name ("MODEL_COMPONENT"): not strict, so a string passes.
    plugin_type: Annotated[PluginType, Field(strict=False)]
    dependencies: list[str] = []
    compatibility: Compatibility = Compatibility()
    model_architecture: str = ""
    model_size: str = ""
    required_memory_gb: Annotated[float, Field(ge=0)] = 0.0
    supported_modalities: list[str] = ["text"]
    license: str = ""
    tags: list[str] = []
    model_family: str = ""
    num_parameters: Annotated[int, Field(ge=0)] = 0
    entry_point: EntryPoint
    model_types: list[str] = []
    architectures: list[str] = []
    capabilities: list[str] = []

    @field_validator("version")
    @classmethod
    def _version_is_pep440(cls, value: str) -> str:
        try:
            Version(value)
        except InvalidVersion as exc:
            raise ValueError(f"not a version such as '1.0.0': {value!r}") from exc
        return value

    @field_validator("dependencies")
    @classmethod
    def _dependencies_are_requirements(cls, value: list[str]) -> list[str]:
        for text in value:
            try:
                Requirement(text)
            except InvalidRequirement as exc:
                raise ValueError(f"not a requirement such as 'torch>=2.4': {text!r}") from exc
        return value

    def to_metadata(self) -> ModelPluginMetadata:
        """The ``ModelPluginMetadata`` a plugin passes to ``TextModelPluginInterface``."""
        data = self.model_dump(exclude={"entry_point"})
        data["plugin_type"] = self.plugin_type
        return ModelPluginMetadata(**data)


def load_manifest(path: str | Path) -> PluginManifest:
    """Read and validate a manifest file (or the manifest inside a plugin folder).

    Raises ``ManifestError`` naming the file and, when one field is at fault, the field.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILENAME
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(path, None, f"cannot be read: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(
            path, None, f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from exc
    return parse_manifest(data, path)


def plugin_metadata(module_file: str | Path) -> ModelPluginMetadata:
    """The metadata of the plugin whose module is ``module_file`` (pass ``__file__``), read from
    the ``plugin_manifest.json`` beside it: the manifest is the plugin's only copy of it."""
    return load_manifest(Path(module_file).parent).to_metadata()


def parse_manifest(data: object, path: str | Path = "<manifest>") -> PluginManifest:
    """Validate already-decoded manifest data; ``path`` is used in error messages."""
    if not isinstance(data, dict):
        raise ManifestError(path, None, f"must hold a JSON object, found {type(data).__name__}")
    try:
        return PluginManifest.model_validate(data)
    except ValidationError as exc:
        problems = exc.errors(include_url=False)
        first = problems[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        message = first["msg"]
        if len(problems) > 1:
            others = ", ".join(_describe(p) for p in problems[1:])
            message += f" (also: {others})"
        raise ManifestError(path, field, message) from exc


def _describe(problem: dict) -> str:
    field = ".".join(str(part) for part in problem["loc"])
    return f"'{field}': {problem['msg']}"
