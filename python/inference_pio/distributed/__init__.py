"""Serving past one process: engine replicas on Ray Serve behind one OpenAI-compatible ingress.

Ray is an optional extra (``pip install "inference-pio[distributed]"``); only ``ray_serve`` imports it,
so ``routing``, ``asgi_call`` and ``metrics_merge`` work (and are tested) without it.
"""

from __future__ import annotations

EXTRA_HINT = 'pip install "inference-pio[distributed]"  (from a checkout: pip install ".[distributed]")'


def require_ray_serve() -> None:
    """A clear ImportError naming the extra when Ray Serve is missing."""
    try:
        import ray.serve  # noqa: F401
    except ImportError as e:
        raise ImportError(f"serving replicas needs Ray Serve, which is not installed: {EXTRA_HINT}") from e


def serve_replicas(spec, replicas: int, host: str, port: int, ray_address: str | None = None,
                   log_level: str = "info", **options) -> None:
    """``pio serve --replicas N``: see ``ray_serve.serve_replicas``; a clear error without the extra."""
    require_ray_serve()
    from .ray_serve import serve_replicas as run

    run(spec, replicas, host, port, ray_address, log_level, **options)
