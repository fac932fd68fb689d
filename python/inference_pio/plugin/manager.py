"""``PluginManager``: discovers plugins, validates their manifests, and builds them on demand.

Discovery reads manifests only (see ``discovery``); a plugin's code is imported the first
time it is created. A broken plugin is recorded in ``broken_plugins()`` and the others
stay usable.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import discovery, loading
from .compatibility import CompatibilityReport, check_compatibility
from .config import read_config_json
from .dependencies import DependencyReport, check_dependencies
from .discovery import BrokenPlugin, Candidate
from .errors import ManifestError, NoPluginForModelError, PluginLoadError, PluginNotFoundError
from .families import Family, families_of
from .interface import TextModelPluginInterface
from .manifest import PluginManifest, load_manifest


@dataclass(frozen=True)
class PluginInfo(Candidate):
    """A discovered plugin with a valid manifest; its code may not be imported yet.

    ``path`` is the plugin folder, ``source`` ``"path"`` (env var or ``search_paths``),
    ``"entry_point"`` or ``"builtin"``, ``module_name`` the package its code is (or will be)
    imported as.
    """

    manifest: PluginManifest = field(kw_only=True)

    @property
    def name(self) -> str:
        return self.manifest.name


class PluginManager:
    """Finds model plugins and creates them.

    Args:
        search_paths: extra plugin folders (or folders of plugin folders), searched
            together with, and after, those in ``INFERENCE_PIO_PLUGIN_PATH``.
        env_var: the environment variable holding plugin folders (``None`` to ignore it).
        entry_point_group: the entry-point group of separately installed plugins
            (``None`` to skip entry points).
        builtin_package: the package of built-in plugins (``None`` to skip them).

    Plugin names are matched case-insensitively. All methods are thread-safe: discovery,
    imports and the shared instances of ``get_plugin`` are guarded by one lock.
    """

    def __init__(
        self,
        search_paths: Iterable[str | Path] = (),
        *,
        env_var: str | None = discovery.ENV_VAR,
        entry_point_group: str | None = discovery.ENTRY_POINT_GROUP,
        builtin_package: str | None = discovery.BUILTIN_PACKAGE,
    ):
        self._search_paths = list(search_paths)
        self._env_var = env_var
        self._entry_point_group = entry_point_group
        self._builtin_package = builtin_package
        self._lock = threading.RLock()
        self._plugins: dict[str, PluginInfo] | None = None
        self._broken: list[BrokenPlugin] = []
        self._instances: dict[str, TextModelPluginInterface] = {}

    # Discovery -----------------------------------------------------------------------

    def discover(self, refresh: bool = False) -> list[PluginInfo]:
        """Search every source (once, or again with ``refresh``) and return the plugins found."""
        with self._lock:
            if self._plugins is None or refresh:
                self._plugins, self._broken = self._discover()
                self._instances.clear()
            return list(self._plugins.values())

    def _discover(self) -> tuple[dict[str, PluginInfo], list[BrokenPlugin]]:
        candidates, broken = [], []
        entries = discovery.env_entries(self._env_var) if self._env_var else []
        sources = [discovery.path_candidates([*entries, *self._search_paths], "path")]
        if self._entry_point_group:
            sources.append(discovery.entry_point_candidates(self._entry_point_group))
        if self._builtin_package:
            sources.append(discovery.builtin_candidates(self._builtin_package))
        for found, failed in sources:
            candidates += found
            broken += failed
        plugins: dict[str, PluginInfo] = {}
        for candidate in candidates:
            try:
                manifest = load_manifest(candidate.path)
            except ManifestError as exc:
                broken.append(BrokenPlugin(str(candidate.path), candidate.source, str(exc)))
                continue
            key = manifest.name.lower()
            if key in plugins:
                first = plugins[key]
                message = (
                    f"plugin name {manifest.name!r} is already taken by {first.path} "
                    f"({first.source}); ignored"
                )
                broken.append(BrokenPlugin(str(candidate.path), candidate.source, message))
                continue
            plugins[key] = PluginInfo(**dataclasses.asdict(candidate), manifest=manifest)
        return plugins, broken

    def list_plugins(self) -> list[PluginInfo]:
        """Every usable plugin, in search order."""
        return self.discover()

    def broken_plugins(self) -> list[BrokenPlugin]:
        """Plugins and search locations that could not be used, with the reason for each."""
        self.discover()
        with self._lock:
            return list(self._broken)

    @property
    def errors(self) -> list[BrokenPlugin]:
        """Same as ``broken_plugins()``."""
        return self.broken_plugins()

    def plugin_info(self, name: str) -> PluginInfo:
        """The plugin called ``name``; ``PluginNotFoundError`` lists the known names."""
        self.discover()
        with self._lock:
            info = self._plugins.get(name.lower())
            if info is None:
                known = ", ".join(sorted(p.name for p in self._plugins.values())) or "none"
                raise PluginNotFoundError(
                    f"no plugin named {name!r} (known plugins: {known}){self._broken_hint()}"
                )
            return info

    # Families ------------------------------------------------------------------------

    def families(self) -> dict[str, Family]:
        """The model families of the usable plugins (``"llama"`` -> ``Family``), from their
        manifests' ``model_family``, in search order."""
        return families_of(p.manifest for p in self.discover())

    def family_for_config(self, config: dict[str, Any]) -> Family:
        """The family of the plugin that serves ``config`` (a config.json dict); raises like
        ``plugin_for_config``."""
        info = self.plugin_for_config(config)
        return next(f for f in self.families().values() if info.name in f.plugins)

    # Checks --------------------------------------------------------------------------

    def check_compatibility(self, name: str, **measured: Any) -> CompatibilityReport:
        """Check the plugin's ``compatibility`` block on this machine.

        ``measured`` (``versions``, ``memory_gb``) replaces measured values, as in
        ``compatibility.check_compatibility``.
        """
        info = self.plugin_info(name)
        return check_compatibility(info.name, info.manifest.compatibility, **measured)

    def check_dependencies(self, name: str) -> DependencyReport:
        """Check the plugin's declared dependencies without importing the plugin."""
        info = self.plugin_info(name)
        return check_dependencies(info.name, info.manifest.dependencies)

    # Creating plugins ----------------------------------------------------------------

    def create_plugin(self, name: str, **kwargs: Any) -> TextModelPluginInterface:
        """A new plugin instance from the manifest's factory, called with ``kwargs``.

        The plugin's code is imported now if it was not before. Import and factory
        failures raise ``PluginLoadError`` and are also recorded in ``broken_plugins()``.
        """
        return self._build(self.plugin_info(name), kwargs)

    def get_plugin(self, name: str) -> TextModelPluginInterface:
        """The shared instance of the plugin (created without arguments on first use)."""
        info = self.plugin_info(name)
        with self._lock:
            key = info.name.lower()
            if key not in self._instances:
                self._instances[key] = self._build(info, {})
            return self._instances[key]

    def _build(self, info: PluginInfo, kwargs: dict[str, Any]) -> TextModelPluginInterface:
        # The lock makes concurrent first uses import the package once.
        with self._lock:
            try:
                return loading.build_plugin(
                    info.name, info, info.manifest.entry_point, **kwargs
                )
            except PluginLoadError as exc:
                broken = BrokenPlugin(str(info.path), info.source, str(exc))
                if broken not in self._broken:
                    self._broken.append(broken)
                raise

    # Choosing a plugin for a checkpoint ----------------------------------------------

    def plugin_for_checkpoint(self, path: str | Path) -> PluginInfo:
        """The plugin for the checkpoint folder ``path``, chosen from its ``config.json``; for a GGUF
        file, from its ``general.architecture`` (matched against the manifests' ``model_types``)."""
        from ..weights.gguf_file import is_gguf_file, read_gguf_architecture

        if is_gguf_file(path):
            return self.plugin_for_config({"model_type": read_gguf_architecture(path)})
        return self.plugin_for_config(read_config_json(path))

    def plugin_for_config(self, config: dict[str, Any]) -> PluginInfo:
        """The plugin serving a transformers ``config.json`` dict.

        ``model_type`` is matched first (against the manifests' ``model_types``), then
        each of ``architectures``; among several matches the first in search order wins.
        ``NoPluginForModelError`` lists the model types and architectures that are served.
        """
        plugins = self.discover()
        model_type = config.get("model_type")
        architectures = config.get("architectures") or []
        if isinstance(architectures, str):
            architectures = [architectures]
        for info in plugins:
            if model_type is not None and model_type in info.manifest.model_types:
                return info
        for architecture in architectures:
            for info in plugins:
                if architecture in info.manifest.architectures:
                    return info
        types = sorted({t for p in plugins for t in p.manifest.model_types}) or ["none"]
        archs = sorted({a for p in plugins for a in p.manifest.architectures}) or ["none"]
        raise NoPluginForModelError(
            f"no plugin serves model_type {model_type!r} / architectures {architectures}; "
            f"known model types: {', '.join(types)}; known architectures: {', '.join(archs)}"
            f"{self._broken_hint()}"
        )

    def _broken_hint(self) -> str:
        # The plugin asked for may be among the broken ones: say where to look.
        broken = self.broken_plugins()
        return f" ({len(broken)} broken plugin(s), see broken_plugins())" if broken else ""
