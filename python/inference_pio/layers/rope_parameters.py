"""Reading a checkpoint's RoPE settings, old style (``rope_theta`` + ``rope_scaling``) or
transformers 5 style (``rope_parameters``), into what ``RotaryEmbedding`` takes."""

from __future__ import annotations


def rope_theta_and_scaling(rope_theta: float, rope_scaling: dict | None,
                           rope_parameters: dict | None) -> tuple[float, dict | None]:
    """``(base, rope_scaling)`` for ``RotaryEmbedding``.

    transformers 5 keeps theta and the scaling together in ``rope_parameters`` (its
    ``rope_theta`` then wins over the top-level one); an explicit ``rope_scaling`` wins over the
    scaling found there. A scaling of type ``default`` (or none) is returned as ``None``.
    """
    if rope_parameters:
        rope_theta = float(rope_parameters.get("rope_theta", rope_theta))
        if rope_scaling is None:
            rope_scaling = {k: v for k, v in rope_parameters.items() if k != "rope_theta"}
    if rope_scaling is not None and rope_scaling.get("rope_type", rope_scaling.get("type")) in (None, "default"):
        rope_scaling = None
    return float(rope_theta), rope_scaling
