"""Phi-3's RoPE variants (LongRoPE short/long factors, partial rotary) against transformers'
``Phi3RotaryEmbedding`` and ``apply_rotary_pos_emb`` on the same positions.

transformers picks the short or the long factors for a whole forward by its largest position;
our cache holds short rows below ``original_max_position_embeddings`` and long rows from it on.
Both sides are compared on positions all below it (short) and on positions past it (long).
"""

from __future__ import annotations

import pytest
import torch

from inference_pio.layers.rope_parameters import partial_rotary_dim
from inference_pio.layers.rotary import RotaryEmbedding
from inference_pio.ops.rope_cache import build_cos_sin_cache, rope_inv_freq

transformers = pytest.importorskip("transformers")
from transformers import Phi3Config  # noqa: E402
from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding, apply_rotary_pos_emb  # noqa: E402

HEADS, HIDDEN = 4, 4 * 48  # head_dim 48
ORIGINAL_MAX, MAX_POSITIONS = 64, 256


def factors(n: int, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    return (1 + 3 * torch.rand(n, generator=g)).tolist()


def phi3_config(partial: float, longrope: bool, **rope) -> Phi3Config:
    head_dim = HIDDEN // HEADS
    rotary = int(head_dim * partial)
    params = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": partial}
    if longrope:
        params.update(rope_type="longrope", short_factor=factors(rotary // 2, 1), long_factor=factors(rotary // 2, 2),
                      original_max_position_embeddings=ORIGINAL_MAX, **rope)
    return Phi3Config(hidden_size=HIDDEN, num_attention_heads=HEADS, num_key_value_heads=2,
                      max_position_embeddings=MAX_POSITIONS, original_max_position_embeddings=ORIGINAL_MAX,
                      rope_parameters=params)


def our_rotary(config: Phi3Config) -> RotaryEmbedding:
    head_dim = HIDDEN // HEADS
    rotary_dim = partial_rotary_dim(head_dim, None, config.rope_parameters)
    scaling = dict(config.rope_parameters)
    return RotaryEmbedding(head_dim, rotary_dim, MAX_POSITIONS, scaling.pop("rope_theta"), scaling,
                           config.max_position_embeddings)


CASES = {  # id: (partial_rotary_factor, longrope, extra rope parameters)
    "longrope": (1.0, True, {}),
    "longrope_partial_0.75": (0.75, True, {}),
    "longrope_attention_factor": (1.0, True, {"attention_factor": 1.3}),
    "default_partial_0.5": (0.5, False, {}),
}
# A forward spanning both sides would differ (transformers then uses the long factors for all of it).
POSITIONS = {"short": torch.arange(0, ORIGINAL_MAX), "long": torch.arange(ORIGINAL_MAX, MAX_POSITIONS, 3)}


@pytest.mark.parametrize("span", POSITIONS)
@pytest.mark.parametrize("case", CASES)
def test_cache_rows_are_transformers_cos_sin(case, span):
    partial, longrope, rope = CASES[case]
    config = phi3_config(partial, longrope, **rope)
    positions = POSITIONS[span]
    cos, sin = Phi3RotaryEmbedding(config)(torch.empty(1), positions[None])
    cache = our_rotary(config).cos_sin_cache[positions]
    half = cache.shape[1] // 2
    assert cache.shape[1] == cos.shape[-1]
    torch.testing.assert_close(cache[:, :half], cos[0, :, :half], rtol=0, atol=0)
    torch.testing.assert_close(cache[:, half:], sin[0, :, :half], rtol=0, atol=0)


@pytest.mark.parametrize("span", POSITIONS)
@pytest.mark.parametrize("case", CASES)
def test_rotated_q_and_k_match_apply_rotary_pos_emb(case, span):
    partial, longrope, rope = CASES[case]
    config = phi3_config(partial, longrope, **rope)
    positions = POSITIONS[span]
    T, D = len(positions), HIDDEN // HEADS
    q, k = torch.randn(T, HEADS * D), torch.randn(T, 2 * D)
    cos, sin = Phi3RotaryEmbedding(config)(torch.empty(1), positions[None])
    expected_q, expected_k = apply_rotary_pos_emb(q.view(1, T, HEADS, D).transpose(1, 2),
                                                  k.view(1, T, 2, D).transpose(1, 2), cos, sin)
    ours_q, ours_k = q.clone(), k.clone()
    our_rotary(config)(positions, ours_q, ours_k)
    torch.testing.assert_close(ours_q.view(T, HEADS, D), expected_q[0].transpose(0, 1), rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(ours_k.view(T, 2, D), expected_k[0].transpose(0, 1), rtol=1e-6, atol=1e-5)
    if partial < 1:  # the unrotated tail passed through untouched
        rot = int(D * partial)
        assert torch.equal(ours_q.view(T, HEADS, D)[..., rot:], q.view(T, HEADS, D)[..., rot:])


def test_short_and_long_rows_differ_and_meet_at_original_max():
    config = phi3_config(1.0, True)
    cache = our_rotary(config).cos_sin_cache
    scaling = dict(config.rope_parameters)
    short, attention = rope_inv_freq(48, scaling.pop("rope_theta"), scaling, MAX_POSITIONS)
    long, _ = rope_inv_freq(48, 10000.0, scaling, MAX_POSITIONS, seq_len=ORIGINAL_MAX + 1)
    assert not torch.allclose(short, long)
    p = ORIGINAL_MAX - 1
    torch.testing.assert_close(cache[p, :24], (p * short).cos() * attention, rtol=0, atol=0)
    torch.testing.assert_close(cache[p + 1, :24], ((p + 1) * long).cos() * attention, rtol=0, atol=0)
    assert attention == pytest.approx((1 + torch.log(torch.tensor(4.0)).item() / torch.log(torch.tensor(64.0)).item())
                                      ** 0.5)


@pytest.mark.parametrize("rope_scaling, message", [
    ({"rope_type": "longrope", "short_factor": [1.0] * 24, "original_max_position_embeddings": 64},
     "needs 'long_factor'"),
    ({"rope_type": "longrope", "short_factor": [1.0] * 23, "long_factor": [1.0] * 24,
      "original_max_position_embeddings": 64}, r"'short_factor': 24 positive numbers"),
    ({"rope_type": "longrope", "short_factor": [1.0] * 24, "long_factor": [0.0] * 24,
      "original_max_position_embeddings": 64}, r"'long_factor': 24 positive numbers"),
])
def test_bad_longrope_settings_are_named(rope_scaling, message):
    with pytest.raises(ValueError, match=message):
        build_cos_sin_cache(48, 128, 10000.0, rope_scaling, 256)


@pytest.mark.parametrize("factor, rope_parameters, expected", [
    (None, None, 96), (0.75, None, 72), (None, {"partial_rotary_factor": 0.5}, 48),
    (1.0, {"partial_rotary_factor": 0.25}, 24),
])
def test_partial_rotary_dim(factor, rope_parameters, expected):
    assert partial_rotary_dim(96, factor, rope_parameters) == expected


@pytest.mark.parametrize("factor, message", [(0.0, r"in \(0, 1\]"), (1.5, r"in \(0, 1\]"), (0.01, "rotates 0 dims"),
                                             (0.3, "rotates 27 dims")])
def test_bad_partial_rotary_factor_is_named(factor, message):
    with pytest.raises(ValueError, match=message):
        partial_rotary_dim(90, factor)
