"""Does a plugin's ``compatibility`` block hold on this machine?

Python, torch and transformers versions are compared with the manifest's specifiers
(``packaging``); memory with what the machine has available now (psutil when it is
installed, ``/proc/meminfo`` otherwise).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.specifiers import SpecifierSet

from .manifest import Compatibility

_GIB = 1024**3


@dataclass(frozen=True)
class CompatibilityCheck:
    """One requirement: what was asked, what was found, and whether it holds.

    ``found`` is ``None`` when the thing could not be measured (a package that is not
    installed, memory on a system without psutil or /proc/meminfo).
    """

    what: str
    required: str
    found: str | None
    ok: bool

    def __str__(self) -> str:
        state = "ok" if self.ok else "NOT MET"
        found = "not found" if self.found is None else self.found
        return f"{self.what} {self.required}: {found} ({state})"


@dataclass(frozen=True)
class CompatibilityReport:
    """Every check made for one plugin; ``ok`` when all of them hold."""

    plugin: str
    checks: tuple[CompatibilityCheck, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def problems(self) -> tuple[CompatibilityCheck, ...]:
        return tuple(check for check in self.checks if not check.ok)

    def __str__(self) -> str:
        if self.ok:
            return f"plugin {self.plugin!r} is compatible"
        return f"plugin {self.plugin!r} is not compatible: " + "; ".join(map(str, self.problems))


def installed_version(distribution: str) -> str | None:
    """The installed version of ``distribution``, ``None`` when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def available_memory_gb() -> float | None:
    """Memory available to new allocations now, in GiB; ``None`` when it cannot be read."""
    try:
        import psutil
    except ImportError:
        pass
    else:
        return psutil.virtual_memory().available / _GIB
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / _GIB
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_compatibility(
    plugin: str,
    compatibility: Compatibility,
    *,
    versions: dict[str, str | None] | None = None,
    memory_gb: float | None = None,
) -> CompatibilityReport:
    """Check ``compatibility`` against this machine.

    ``versions`` (``{"python": ..., "torch": ..., "transformers": ...}``) and ``memory_gb``
    replace the measured values, for tests and for asking about another machine. A
    required package that is not installed fails its check; unmeasurable memory passes
    (we cannot tell, and refusing would block every system without /proc).
    """
    versions = dict(versions or {})
    versions.setdefault("python", platform.python_version())
    checks = []
    for what, spec in (
        ("python", compatibility.python_version),
        ("torch", compatibility.torch_version),
        ("transformers", compatibility.transformers_version),
    ):
        if spec is None:
            continue
        found = versions[what] if what in versions else installed_version(what)
        # Local and nightly builds (torch "2.5.0a0+git...") count as their version.
        ok = found is not None and SpecifierSet(spec).contains(found, prereleases=True)
        checks.append(CompatibilityCheck(what, spec, found, ok))
    if compatibility.min_memory_gb > 0:
        memory = available_memory_gb() if memory_gb is None else memory_gb
        found = None if memory is None else f"{memory:.1f} GiB available"
        ok = memory is None or memory >= compatibility.min_memory_gb
        checks.append(
            CompatibilityCheck("memory", f">= {compatibility.min_memory_gb:g} GiB", found, ok)
        )
    return CompatibilityReport(plugin, tuple(checks))
