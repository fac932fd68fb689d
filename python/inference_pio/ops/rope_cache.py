"""The cos/sin cache that ``rotary_embedding`` reads, computed as transformers computes RoPE.

``rope_inv_freq`` reproduces ``transformers.modeling_rope_utils`` (and the models' default
init) step by step in float32, so the inverse frequencies are bit-identical to transformers';
``build_cos_sin_cache`` then takes ``position * inv_freq`` in float32, like transformers'
rotary modules, so the cache matches the cos/sin transformers feeds ``apply_rotary_pos_emb``.

``rope_scaling`` is the checkpoint's ``rope_scaling`` dict (or transformers 5's
``rope_parameters``); its type is read from ``rope_type`` or the legacy ``type`` key.
Supported: default, ``linear``, ``dynamic`` (NTK), ``llama3``, ``yarn``, ``longrope`` (Phi-3). The
base and the rotary dim are arguments; a ``rope_theta`` in the dict must agree with ``base``.
"""

from __future__ import annotations

import math

import torch

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn", "longrope")


def _rope_type(rope_scaling: dict | None) -> str:
    if rope_scaling is None:
        return "default"
    if not isinstance(rope_scaling, dict):
        raise TypeError(f"rope_scaling must be a dict or None, got {type(rope_scaling).__name__}")
    rope_type = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        raise ValueError(f"rope_scaling type {rope_type!r} is not supported; supported: {', '.join(ROPE_TYPES)}")
    return rope_type


def _param(rope_scaling: dict, key: str, rope_type: str):
    if rope_scaling.get(key) is None:
        raise ValueError(f"rope_scaling of type {rope_type!r} needs {key!r}, got {rope_scaling!r}")
    return rope_scaling[key]


def _original_max(rope_scaling: dict, rope_type: str, max_position_embeddings: int | None) -> int:
    """transformers falls back to the config's max_position_embeddings when the dict has none."""
    value = rope_scaling.get("original_max_position_embeddings", max_position_embeddings)
    if value is None:
        raise ValueError(f"rope_scaling of type {rope_type!r} needs 'original_max_position_embeddings' (or pass max_position_embeddings)")
    return value


def _default_inv_freq(rotary_dim: int, base: float, device) -> torch.Tensor:
    return 1.0 / (base ** (torch.arange(0, rotary_dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / rotary_dim))


def rope_inv_freq(
    rotary_dim: int,
    base: float,
    rope_scaling: dict | None = None,
    max_position_embeddings: int | None = None,
    *,
    seq_len: int | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, float]:
    """``(inv_freq [rotary_dim / 2] float32, attention_scaling)`` for RoPE over ``rotary_dim`` dims.

    ``max_position_embeddings`` is the config's value: dynamic NTK scales relative to it, and
    llama3/yarn/longrope use it when ``original_max_position_embeddings`` is absent (longrope also
    derives its default ``factor`` from it). ``seq_len`` matters for dynamic NTK (transformers
    recomputes the base once a sequence grows past ``max_position_embeddings``) and for longrope
    (its ``long_factor`` applies past ``original_max_position_embeddings``, ``short_factor`` below).
    """
    if isinstance(rotary_dim, bool) or not isinstance(rotary_dim, int) or rotary_dim <= 0 or rotary_dim % 2:
        raise ValueError(f"rotary_dim must be a positive even int, got {rotary_dim!r}")
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not base > 0:
        raise ValueError(f"base must be a positive number, got {base!r}")
    rope_type = _rope_type(rope_scaling)
    if rope_scaling is not None and rope_scaling.get("rope_theta") not in (None, base):
        raise ValueError(f"rope_scaling['rope_theta'] ({rope_scaling['rope_theta']}) disagrees with base ({base})")
    if rope_type == "default":
        return _default_inv_freq(rotary_dim, base, device), 1.0

    if rope_type == "linear":
        return _default_inv_freq(rotary_dim, base, device) / _param(rope_scaling, "factor", rope_type), 1.0

    if rope_type == "dynamic":
        factor = _param(rope_scaling, "factor", rope_type)
        if max_position_embeddings is None:
            raise ValueError("rope_scaling of type 'dynamic' needs max_position_embeddings")
        seq_len = max(seq_len or max_position_embeddings, max_position_embeddings)
        base = base * ((factor * seq_len / max_position_embeddings) - (factor - 1)) ** (rotary_dim / (rotary_dim - 2))
        return _default_inv_freq(rotary_dim, base, device), 1.0

    if rope_type == "llama3":
        inv_freq = _default_inv_freq(rotary_dim, base, device)
        factor = _param(rope_scaling, "factor", rope_type)
        low_freq_factor = _param(rope_scaling, "low_freq_factor", rope_type)
        high_freq_factor = _param(rope_scaling, "high_freq_factor", rope_type)
        old_context_len = _original_max(rope_scaling, rope_type, max_position_embeddings)
        low_freq_wavelen = old_context_len / low_freq_factor
        high_freq_wavelen = old_context_len / high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        # Long wavelengths are divided by factor, short ones kept, the band between interpolated.
        inv_freq_llama = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        smooth_factor = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
        smoothed = (1 - smooth_factor) * inv_freq_llama / factor + smooth_factor * inv_freq_llama
        is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
        return torch.where(is_medium, smoothed, inv_freq_llama), 1.0

    if rope_type == "longrope":
        return _longrope_inv_freq(rotary_dim, base, rope_scaling, max_position_embeddings, seq_len, device)

    # yarn
    original_max = _original_max(rope_scaling, rope_type, max_position_embeddings)
    factor = rope_scaling.get("factor")
    if factor is None:  # DeepSeek-V3 style: the ratio of the extended to the pretrained length
        if max_position_embeddings is None:
            raise ValueError("rope_scaling of type 'yarn' needs 'factor' (or max_position_embeddings)")
        factor = max_position_embeddings / original_max
    attention_factor = rope_scaling.get("attention_factor")
    mscale, mscale_all_dim = rope_scaling.get("mscale"), rope_scaling.get("mscale_all_dim")

    def get_mscale(scale, m=1):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
        else:
            attention_factor = get_mscale(factor)
    beta_fast = rope_scaling.get("beta_fast") or 32
    beta_slow = rope_scaling.get("beta_slow") or 1

    def correction_dim(num_rotations):
        return (rotary_dim * math.log(original_max / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rope_scaling.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, rotary_dim - 1)
    if low == high:
        high += 0.001  # as transformers: avoids a zero-width ramp
    ramp = torch.clamp((torch.arange(rotary_dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    pos_freqs = base ** (torch.arange(0, rotary_dim, 2).to(device=device, dtype=torch.float) / rotary_dim)
    inv_freq_extrapolation = 1.0 / pos_freqs
    inv_freq_interpolation = 1.0 / (factor * pos_freqs)
    extrapolation_factor = 1 - ramp.to(device=device, dtype=torch.float)
    inv_freq = inv_freq_interpolation * (1 - extrapolation_factor) + inv_freq_extrapolation * extrapolation_factor
    return inv_freq, attention_factor


def _longrope_factors(rope_scaling: dict, key: str, rotary_dim: int) -> list:
    factors = _param(rope_scaling, key, "longrope")
    if not isinstance(factors, (list, tuple)) or len(factors) != rotary_dim // 2 or not all(
            not isinstance(f, bool) and isinstance(f, (int, float)) and f > 0 for f in factors):
        raise ValueError(f"rope_scaling of type 'longrope' needs {key!r}: {rotary_dim // 2} positive numbers "
                         f"(one per rotated pair of dims), got {factors!r}"[:300])
    return list(factors)


def _longrope_inv_freq(rotary_dim: int, base: float, rope_scaling: dict, max_position_embeddings: int | None,
                       seq_len: int | None, device) -> tuple[torch.Tensor, float]:
    """LongRoPE (Phi-3): the default frequencies divided per pair by ``long_factor`` for sequences
    longer than ``original_max_position_embeddings``, else by ``short_factor``; cos/sin scaled by
    ``attention_factor`` (default ``sqrt(1 + ln(factor) / ln(original_max))``, ``factor`` defaulting
    to ``max_position_embeddings / original_max``), as transformers computes them."""
    original_max = _original_max(rope_scaling, "longrope", max_position_embeddings)
    long = seq_len is not None and seq_len > original_max
    factors = _longrope_factors(rope_scaling, "long_factor" if long else "short_factor", rotary_dim)
    factor = rope_scaling.get("factor")
    if factor is None:
        factor = (max_position_embeddings or original_max) / original_max
    attention_factor = rope_scaling.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original_max))
    ext_factors = torch.tensor(factors, dtype=torch.float32, device=device)
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.int64, device=device).float() / rotary_dim
    return 1.0 / (ext_factors * base ** exponents), attention_factor


def build_cos_sin_cache(
    rotary_dim: int,
    max_position: int,
    base: float = 10000.0,
    rope_scaling: dict | None = None,
    max_position_embeddings: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``[max_position, rotary_dim]`` contiguous in ``dtype``: ``cos(p * inv_freq)`` in the first
    half of each row, ``sin`` in the second, both times ``attention_scaling`` (vLLM layout).

    The angles are float32 products, as in transformers. Dynamic NTK: a static cache cannot
    follow transformers' per-batch recomputation, so the base is scaled for ``seq_len =
    max_position`` (the cache length), as vLLM does; sequences shorter than
    ``max_position_embeddings`` then differ from transformers, which keeps the unscaled base.

    LongRoPE: rows below ``original_max_position_embeddings`` use the short factors and rows from
    it on the long ones. transformers picks one set for a whole forward by its largest position,
    the same for every token of a sequence that stays within ``original_max`` and for each decode
    step past it; a sequence that crosses it differs in its earlier keys, which transformers
    recomputes with the long factors (its generate drops the cache there) and a paged cache keeps.
    """
    if isinstance(max_position, bool) or not isinstance(max_position, int) or max_position <= 0:
        raise ValueError(f"max_position must be a positive int, got {max_position!r}")
    short_len = None if _rope_type(rope_scaling) == "longrope" else max_position  # longrope: short rows first
    inv_freq, attention_scaling = rope_inv_freq(
        rotary_dim, base, rope_scaling, max_position_embeddings, seq_len=short_len, device=device
    )
    positions = torch.arange(max_position, device=inv_freq.device, dtype=torch.int64).float()
    if _rope_type(rope_scaling) == "longrope":
        original_max = _original_max(rope_scaling, "longrope", max_position_embeddings)
        if max_position > original_max:  # long rows: the frequencies transformers uses past original_max
            long_inv_freq, _ = rope_inv_freq(rotary_dim, base, rope_scaling, max_position_embeddings,
                                             seq_len=original_max + 1, device=device)
            inv_freq = torch.where((positions >= original_max)[:, None], long_inv_freq[None, :], inv_freq[None, :])
    freqs = positions[:, None] * inv_freq
    cache = torch.cat((freqs.cos() * attention_scaling, freqs.sin() * attention_scaling), dim=-1)
    return cache.to(dtype).contiguous()
