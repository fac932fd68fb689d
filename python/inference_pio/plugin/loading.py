"""Importing a discovered plugin's code and calling its factory.

Folders from ``INFERENCE_PIO_PLUGIN_PATH`` are not on ``sys.path``: their package is built
with ``spec_from_file_location`` under the candidate's unique module name and registered
in ``sys.modules`` before it runs, so relative imports (``from .config import ...``) work.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from types import ModuleType
from typing import Any

from .discovery import Candidate
from .errors import PluginLoadError
from .interface import TextModelPluginInterface
from .manifest import EntryPoint


def import_package(candidate: Candidate) -> ModuleType:
    """Import the plugin's package (once; later calls return the same module)."""
    if candidate.module_name in sys.modules:
        return sys.modules[candidate.module_name]
    if not candidate.from_file:
        return importlib.import_module(candidate.module_name)
    init = candidate.path / "__init__.py"
    spec = importlib.util.spec_from_file_location(
        candidate.module_name, init, submodule_search_locations=[str(candidate.path)]
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot build an import spec for {init}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[candidate.module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        # A half-run package must not be found by the next attempt.
        sys.modules.pop(candidate.module_name, None)
        raise
    return module


def resolve_factory(name: str, candidate: Candidate, entry_point: EntryPoint) -> Any:
    """Import the entry point's module and return its factory (or the class without one)."""
    try:
        package = import_package(candidate)
        module = importlib.import_module(entry_point.module, package=package.__name__)
    except Exception as exc:
        raise PluginLoadError(
            f"plugin {name!r} ({candidate.path}): importing {entry_point.module!r} failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    attribute = entry_point.factory_function or entry_point.class_name
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise PluginLoadError(
            f"plugin {name!r} ({candidate.path}): module {module.__name__!r} has no callable "
            f"{attribute!r} (entry_point in the manifest)"
        )
    return factory


def build_plugin(
    name: str, candidate: Candidate, entry_point: EntryPoint, **kwargs: Any
) -> TextModelPluginInterface:
    """Call the plugin's factory with ``kwargs`` and check that it returned a plugin."""
    factory = resolve_factory(name, candidate, entry_point)
    try:
        plugin = factory(**kwargs)
    except Exception as exc:
        raise PluginLoadError(
            f"plugin {name!r}: {getattr(factory, '__name__', factory)}() raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(plugin, TextModelPluginInterface):
        raise PluginLoadError(
            f"plugin {name!r}: {getattr(factory, '__name__', factory)}() returned "
            f"{type(plugin).__name__}, not a TextModelPluginInterface"
        )
    return plugin
