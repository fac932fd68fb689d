"""Which parlant releases the adapter is written for, checked before anything of parlant is imported.

The adapter follows how parlant's server builds NLP objects (``parlant/bin/server.py``, ``parlant/sdk.py``):
the embedder is resolved from its dependency container by ``type(await service.get_embedder())``, each
schematic generator is registered under its ``__orig_class__``, and the streaming generator under its
type. 3.2.0 and 3.3.2 do all of this the same way and share the ``parlant.core.nlp`` interfaces
(``supports_streaming`` / ``get_streaming_text_generator`` appeared in 3.2, ``moderate_customer`` in 3.1).
"""

from __future__ import annotations

from importlib import metadata

SUPPORTED = ((3, 2), (3, 4))  # [lowest, first unsupported) as (major, minor)
SUPPORTED_TEXT = "parlant>=3.2,<3.4"


def _release(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
        if not piece.isdigit():  # 3.3.0rc1: stop at the pre-release marker
            break
    return tuple(parts)


def check_parlant_version(installed: str | None = None) -> str:
    """The installed parlant version; ImportError naming it when the adapter does not support it."""
    if installed is None:
        try:
            installed = metadata.version("parlant")
        except metadata.PackageNotFoundError:
            raise ImportError(f"the Parlant adapter needs parlant ({SUPPORTED_TEXT}): "
                              "pip install 'inference-pio[parlant]'") from None
    release = _release(installed)[:2]
    low, high = SUPPORTED
    if not release or not low <= release < high:
        raise ImportError(f"parlant {installed} is installed; the Parlant adapter supports {SUPPORTED_TEXT} "
                          "(it relies on how those releases' servers build NLP objects)")
    return installed


__all__ = ["SUPPORTED_TEXT", "check_parlant_version"]
