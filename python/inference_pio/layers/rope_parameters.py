"""Reading a checkpoint's RoPE settings, old style (``rope_theta`` + ``rope_scaling``) or
transformers 5 style (``rope_parameters``), into what ``RotaryEmbedding`` takes: the base, the
scaling and how many dims of each head rotate."""

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


def partial_rotary_dim(head_dim: int, partial_rotary_factor: float | None,
                       rope_parameters: dict | None = None) -> int:
    """How many dims of each head RoPE rotates: ``int(head_dim * partial_rotary_factor)`` as
    transformers computes it (Phi-3 family, e.g. 0.75 in Phi-4-mini).

    The factor is read from ``rope_parameters`` (transformers 5 keeps it there) or else the
    config's top-level ``partial_rotary_factor``; absent, every dim rotates. Raises ValueError for
    a factor outside (0, 1] or one that leaves an odd or empty rotated part.
    """
    factor = (rope_parameters or {}).get("partial_rotary_factor", partial_rotary_factor)
    if factor is None:
        return head_dim
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor <= 1:
        raise ValueError(f"partial_rotary_factor must be a number in (0, 1], got {factor!r}")
    rotary_dim = int(head_dim * factor)
    if rotary_dim < 2 or rotary_dim % 2:
        raise ValueError(f"partial_rotary_factor {factor} of head_dim {head_dim} rotates {rotary_dim} dims; "
                         "RoPE needs a positive even number")
    return rotary_dim
