"""Exceptions of the plugin mechanism: each names the plugin, file or field that was wrong."""

from __future__ import annotations

from ..errors import InferencePioError


class PluginError(InferencePioError):
    """Base class of every error raised by ``inference_pio.plugin``."""


class ManifestError(PluginError, ValueError):
    """A ``plugin_manifest.json`` that cannot be read or does not follow the schema.

    ``path`` is the manifest file, ``field`` the dotted name of the first offending field
    (``None`` when the file as a whole is wrong: unreadable, not JSON, not an object).
    """

    def __init__(self, path, field: str | None, message: str):
        self.path = str(path)
        self.field = field
        self.message = message
        where = f" field '{field}'" if field else ""
        super().__init__(f"{self.path}:{where} {message}")


class ConfigError(PluginError, ValueError):
    """A configuration value (a ``BaseConfig`` field or a ``config.json``) that is invalid."""


class PluginNotFoundError(PluginError, LookupError):
    """No discovered plugin has the requested name."""


class PluginLoadError(PluginError, ImportError):
    """A plugin's code could not be imported or its entry point did not give a plugin."""


class NoPluginForModelError(PluginError, LookupError):
    """No plugin serves a checkpoint's ``model_type`` or ``architectures``."""


class MissingDependencyError(PluginError, ImportError):
    """A plugin's dependencies are missing or at the wrong version; carries the report."""

    def __init__(self, report):
        self.report = report
        super().__init__(str(report))


class PluginInstallError(PluginError, RuntimeError):
    """``pip install`` for a plugin's dependencies failed."""
