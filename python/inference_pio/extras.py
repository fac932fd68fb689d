"""Optional dependencies: which modules each extra of ``pyproject.toml`` installs, and the check a
command runs before it needs them.

``import inference_pio``, the ops, the engine and ``pio generate`` / ``pio chat`` need none of these;
``pio serve`` needs ``serve``, constrained JSON and tool calls need ``grammar``, remote
OpenAI-compatible services need ``remote``. The distributions themselves are listed in
``pyproject.toml``; keep the two in step (a test compares them).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingExtraError

#: extra -> the modules it makes importable (import names, not distribution names).
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "prometheus_client"),
    "grammar": ("xgrammar", "jsonschema"),
    "remote": ("openai",),
    "parlant": ("parlant",),
    "distributed": ("ray",),
}


def require(extra: str, feature: str, modules: tuple[str, ...] | None = None) -> list[ModuleType]:
    """Imports ``modules`` (default: all of ``extra``'s) and returns them; ``MissingExtraError`` (an
    ``ImportError``) naming ``feature``, the missing module and ``extra`` when one is not installed."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; the extras are {', '.join(EXTRAS)}")
    imported = []
    for name in EXTRAS[extra] if modules is None else modules:
        try:
            imported.append(importlib.import_module(name))
        except ImportError as e:
            # Only the package itself missing means the extra is missing; a broken install says its own error.
            if e.name != name and not (e.name or "").startswith(name + "."):
                raise
            raise MissingExtraError(feature, name, extra) from e
    return imported


__all__ = ["EXTRAS", "require"]
