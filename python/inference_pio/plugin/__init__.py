"""The plugin mechanism: the plugin interface, the config base class, the manifest schema
and the ``PluginManager`` that discovers plugins and creates them (see README.md here)."""

from .contract import (EmbeddingPlugin, GenerationPlugin, MissingCapabilityError, can_embed, can_generate,
                       missing_members, require)
from .compatibility import CompatibilityCheck, CompatibilityReport, check_compatibility
from .config import BaseConfig, read_config_json
from .dependencies import DependencyReport, UnmetDependency, check_dependencies
from .discovery import BUILTIN_PACKAGE, ENTRY_POINT_GROUP, ENV_VAR, BrokenPlugin
from .errors import (
    ConfigError,
    ManifestError,
    MissingDependencyError,
    NoPluginForModelError,
    PluginError,
    PluginInstallError,
    PluginLoadError,
    PluginNotFoundError,
)
from .interface import CheckpointPlugin, ModelPluginMetadata, PluginType, TextModelPluginInterface
from .manager import PluginInfo, PluginManager
from .families import Family, installed_manager
from .manifest import MANIFEST_FILENAME, PluginManifest, load_manifest, parse_manifest, plugin_metadata

__all__ = [
    "BUILTIN_PACKAGE", "ENTRY_POINT_GROUP", "ENV_VAR", "MANIFEST_FILENAME",
    "BaseConfig", "BrokenPlugin", "CheckpointPlugin", "EmbeddingPlugin", "Family", "GenerationPlugin",
    "MissingCapabilityError", "can_embed", "can_generate", "installed_manager", "missing_members", "plugin_metadata",
    "require", "CompatibilityCheck", "CompatibilityReport", "ConfigError",
    "DependencyReport", "ManifestError", "MissingDependencyError", "ModelPluginMetadata",
    "NoPluginForModelError", "PluginError", "PluginInfo", "PluginInstallError",
    "PluginLoadError", "PluginManager", "PluginManifest", "PluginNotFoundError", "PluginType",
    "TextModelPluginInterface", "UnmetDependency", "check_compatibility", "check_dependencies",
    "load_manifest", "parse_manifest", "read_config_json",
]
