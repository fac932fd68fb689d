"""Checking a plugin's dependencies (PEP 508 requirement strings) against what is installed.

Nothing here imports the dependencies: installed versions come from ``importlib.metadata``,
so the check is cheap and has no side effects. pip runs only through ``run_pip``.
"""

from __future__ import annotations

import importlib
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import metadata

from packaging.requirements import InvalidRequirement, Requirement

from .errors import MissingDependencyError, PluginInstallError


@dataclass(frozen=True)
class UnmetDependency:
    """One requirement that is not satisfied: ``installed`` is ``None`` when it is absent."""

    requirement: str
    installed: str | None

    def __str__(self) -> str:
        if self.installed is None:
            return f"{self.requirement} (not installed)"
        return f"{self.requirement} (installed: {self.installed})"


@dataclass(frozen=True)
class DependencyReport:
    """Result of checking a plugin's dependencies.

    ``unmet`` lists what is missing or at the wrong version; ``pip_command`` is the exact
    command (argv) that would install it, empty when nothing is needed.
    """

    plugin: str
    unmet: tuple[UnmetDependency, ...] = ()
    pip_command: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.unmet

    @property
    def pip_command_line(self) -> str:
        """``pip_command`` as one shell-quoted line, ready to paste."""
        return shlex.join(self.pip_command)

    def raise_if_unmet(self) -> None:
        """Raise ``MissingDependencyError`` carrying this report when anything is unmet."""
        if not self.ok:
            raise MissingDependencyError(self)

    def __str__(self) -> str:
        if self.ok:
            return f"plugin {self.plugin!r}: all dependencies are installed"
        lines = "; ".join(str(u) for u in self.unmet)
        return (
            f"plugin {self.plugin!r} needs: {lines}. Install them with: {self.pip_command_line}"
        )


def check_dependencies(plugin: str, requirements: list[str] | tuple[str, ...]) -> DependencyReport:
    """Check each requirement string against the installed distributions.

    Requirements whose environment marker does not apply here are skipped. An invalid
    requirement string raises ``ValueError`` naming it (manifests are validated earlier,
    so this means a plugin built its metadata by hand).
    """
    unmet = []
    for text in requirements:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise ValueError(f"plugin {plugin!r}: invalid dependency {text!r}: {exc}") from exc
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            unmet.append(UnmetDependency(text, None))
            continue
        # Local builds such as torch's "2.5.0a0+git" are pre-releases; accept them.
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            unmet.append(UnmetDependency(text, installed))
    command = (sys.executable, "-m", "pip", "install", *(u.requirement for u in unmet))
    return DependencyReport(plugin, tuple(unmet), command if unmet else ())


def run_pip(report: DependencyReport) -> None:
    """Run the report's pip command; raise ``PluginInstallError`` with the command on failure."""
    if report.ok:
        return
    try:
        subprocess.run(list(report.pip_command), check=True)
    except subprocess.CalledProcessError as exc:
        raise PluginInstallError(
            f"plugin {report.plugin!r}: pip exited with status {exc.returncode}; "
            f"command: {report.pip_command_line}"
        ) from exc
    except OSError as exc:
        raise PluginInstallError(
            f"plugin {report.plugin!r}: could not run pip ({exc}); command: {report.pip_command_line}"
        ) from exc
    # Finders cache directory listings; new distributions must be visible to the recheck.
    importlib.invalidate_caches()
