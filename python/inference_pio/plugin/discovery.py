"""Finding plugin folders without importing plugin code.

Three sources, searched in this order (the first plugin of a given name wins):

1. folders named by ``INFERENCE_PIO_PLUGIN_PATH`` (``os.pathsep``-separated; each entry is a
   plugin folder or a folder of plugin folders) and any ``search_paths`` given to the
   manager; their code is imported later under a unique module name;
2. the entry-point group ``inference_pio.plugins``: each entry point names the *package*
   of a plugin shipped as its own distribution (``llama_extra = my_dist.llama_plugin``,
   no ``:attr``); the package folder is located with ``importlib.util.find_spec``, which
   does not run the package (for a dotted name its parent packages are imported);
3. the built-in package ``inference_pio.plugins``: each subpackage with a manifest.

A plugin folder is one that holds ``plugin_manifest.json``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterable

from .manifest import MANIFEST_FILENAME

ENV_VAR = "INFERENCE_PIO_PLUGIN_PATH"
ENTRY_POINT_GROUP = "inference_pio.plugins"
BUILTIN_PACKAGE = "inference_pio.plugins"


@dataclass(frozen=True)
class Candidate:
    """A plugin folder found by discovery, not yet validated.

    ``module_name`` is the package name its code is imported under; ``from_file`` says it
    must be imported from the folder (``spec_from_file_location``) rather than by name.
    """

    path: Path
    source: str
    module_name: str
    from_file: bool = False


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin (or a search location) that could not be used, and why."""

    path: str
    source: str
    message: str

    def __str__(self) -> str:
        return f"{self.path} ({self.source}): {self.message}"


Found = tuple[list[Candidate], list[BrokenPlugin]]


def path_candidates(entries: Iterable[str | Path], source: str) -> Found:
    """Plugin folders under each entry: the entry itself if it is one, else its subfolders."""
    found, broken = [], []
    for entry in entries:
        folder = Path(entry).expanduser()
        if not folder.is_dir():
            broken.append(BrokenPlugin(str(folder), source, "is not a directory"))
            continue
        if (folder / MANIFEST_FILENAME).is_file():
            folders = [folder]
        else:
            folders = sorted(p for p in folder.iterdir() if (p / MANIFEST_FILENAME).is_file())
        for plugin_dir in folders:
            if not (plugin_dir / "__init__.py").is_file():
                broken.append(BrokenPlugin(
                    str(plugin_dir), source, "has a manifest but no __init__.py (not a package)"
                ))
                continue
            found.append(Candidate(plugin_dir, source, _unique_module_name(plugin_dir), True))
    return found, broken


def env_entries(env_var: str = ENV_VAR) -> list[str]:
    """The non-empty entries of the plugin path environment variable."""
    return [e for e in os.environ.get(env_var, "").split(os.pathsep) if e.strip()]


def entry_point_candidates(group: str = ENTRY_POINT_GROUP) -> Found:
    """Plugin packages named by installed distributions' entry points."""
    found, broken, seen = [], [], set()
    for ep in metadata.entry_points(group=group):
        # The same distribution may sit on sys.path twice (editable + site-packages).
        if (ep.name, ep.value) in seen:
            continue
        seen.add((ep.name, ep.value))
        try:
            found.append(Candidate(_entry_point_folder(ep), "entry_point", ep.module))
        except LookupError as exc:
            where = f"entry point {ep.name} = {ep.value}"
            broken.append(BrokenPlugin(where, "entry_point", str(exc)))
    return found, broken


def _entry_point_folder(ep: metadata.EntryPoint) -> Path:
    """The folder of the package ``ep`` names; ``LookupError`` saying why there is none."""
    if ep.attr:
        raise LookupError("must name a plugin package, not an object (drop ':attr')")
    try:
        spec = importlib.util.find_spec(ep.module)
    except Exception as exc:  # a dotted name runs its parent packages, which may fail any way
        raise LookupError(f"cannot locate {ep.module!r}: {type(exc).__name__}: {exc}") from exc
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"{ep.module!r} is not an importable package")
    for location in spec.submodule_search_locations:
        if (Path(location) / MANIFEST_FILENAME).is_file():
            return Path(location)
    raise LookupError(f"package {ep.module!r} has no {MANIFEST_FILENAME}")


def builtin_candidates(package: str = BUILTIN_PACKAGE) -> Found:
    """Subpackages of the built-in plugins package that hold a manifest.

    Only the package's own ``__init__`` runs; its subpackages are not imported.
    """
    try:
        root = importlib.import_module(package)
    except ImportError as exc:
        return [], [BrokenPlugin(package, "builtin", f"cannot import the plugins package: {exc}")]
    found = []
    for location in getattr(root, "__path__", []):
        for folder in sorted(Path(location).iterdir()):
            if (folder / MANIFEST_FILENAME).is_file() and folder.name.isidentifier():
                found.append(Candidate(folder, "builtin", f"{package}.{folder.name}"))
    return found, []


def _unique_module_name(folder: Path) -> str:
    """A module name no other plugin folder gets: the folder name plus a hash of its path."""
    resolved = str(folder.resolve())
    digest = hashlib.sha1(resolved.encode()).hexdigest()[:12]
    stem = re.sub(r"\W", "_", folder.name)
    return f"inference_pio_plugin_{stem}_{digest}"
