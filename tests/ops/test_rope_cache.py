"""rope_cache: inverse frequencies and cos/sin caches against transformers' own functions, and
rotary_embedding with our cache against transformers' apply_rotary_pos_emb (Llama, NeoX layout)."""

import pytest
import torch

from inference_pio.ops.rope_cache import build_cos_sin_cache, rope_inv_freq
from inference_pio.ops.rotary_embedding import rotary_embedding
from .helpers import assert_close

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig  # noqa: E402
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS  # noqa: E402
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb  # noqa: E402

HEAD_DIM = 64
MAX_POSITION_EMBEDDINGS = 2048

# (id, rope_scaling as a checkpoint writes it, base, rotary_dim)
SCALINGS = [
    ("linear", {"rope_type": "linear", "factor": 4.0}, 10000.0, 64),
    ("linear_legacy_key_partial", {"type": "linear", "factor": 2.0}, 500000.0, 32),
    ("dynamic", {"rope_type": "dynamic", "factor": 2.0}, 10000.0, 64),
    ("llama3", {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 512}, 500000.0, 64),
    ("llama3_partial", {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 256}, 10000.0, 16),
    ("yarn", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512}, 10000.0, 64),
    ("yarn_deepseek", {"type": "yarn", "factor": 40.0, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0,
                       "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096}, 10000.0, 64),
    ("yarn_mscale_no_truncate", {"rope_type": "yarn", "factor": 16.0, "beta_fast": 16, "beta_slow": 2, "mscale": 0.707,
                                 "mscale_all_dim": 1.0, "truncate": False,
                                 "original_max_position_embeddings": 128}, 50000.0, 32),
    ("yarn_factor_from_lengths", {"rope_type": "yarn", "factor": None, "original_max_position_embeddings": 512},
     10000.0, 64),
]


def _config(rope_scaling: dict | None, base: float, rotary_dim: int) -> LlamaConfig:
    """A Llama config built offline; transformers 5 keeps rope settings in ``rope_parameters``."""
    params = dict(rope_scaling or {"rope_type": "default"}, rope_theta=base)
    if rotary_dim != HEAD_DIM:
        params["partial_rotary_factor"] = rotary_dim / HEAD_DIM
    return LlamaConfig(
        hidden_size=4 * HEAD_DIM,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=HEAD_DIM,
        max_position_embeddings=MAX_POSITION_EMBEDDINGS,
        rope_parameters=params,
    )


def _transformers_inv_freq(config: LlamaConfig, seq_len=None):
    rope_type = config.rope_parameters["rope_type"]
    if rope_type == "default":
        return LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    return ROPE_INIT_FUNCTIONS[rope_type](config, None, seq_len=seq_len)


def _transformers_cos_sin(config: LlamaConfig, positions: torch.Tensor, dtype: torch.dtype):
    """cos, sin [1, tokens, 2 * (rotary_dim / 2)] as LlamaRotaryEmbedding.forward computes them."""
    rope = LlamaRotaryEmbedding(config)
    return rope(torch.empty(1, dtype=dtype), positions[None])


@pytest.mark.parametrize("rope_scaling, base, rotary_dim", [s[1:] for s in SCALINGS], ids=[s[0] for s in SCALINGS])
def test_inv_freq_matches_transformers(rope_scaling, base, rotary_dim):
    expected, expected_scaling = _transformers_inv_freq(_config(rope_scaling, base, rotary_dim))
    inv_freq, scaling = rope_inv_freq(rotary_dim, base, rope_scaling, MAX_POSITION_EMBEDDINGS)
    assert inv_freq.dtype == torch.float32 and inv_freq.shape == (rotary_dim // 2,)
    assert torch.equal(inv_freq, expected)
    assert scaling == pytest.approx(expected_scaling, rel=1e-12)


def test_default_inv_freq_matches_transformers():
    expected, _ = _transformers_inv_freq(_config(None, 10000.0, HEAD_DIM))
    for rope_scaling in (None, {"rope_type": "default"}, {"type": "default"}):
        inv_freq, scaling = rope_inv_freq(HEAD_DIM, 10000.0, rope_scaling)
        assert torch.equal(inv_freq, expected) and scaling == 1.0


@pytest.mark.parametrize("seq_len", [100, MAX_POSITION_EMBEDDINGS, 3 * MAX_POSITION_EMBEDDINGS + 5])
def test_dynamic_ntk_follows_sequence_length_like_transformers(seq_len):
    rope_scaling = {"rope_type": "dynamic", "factor": 3.0}
    expected, _ = _transformers_inv_freq(_config(rope_scaling, 10000.0, HEAD_DIM), seq_len=seq_len)
    inv_freq, _ = rope_inv_freq(HEAD_DIM, 10000.0, rope_scaling, MAX_POSITION_EMBEDDINGS, seq_len=seq_len)
    assert torch.equal(inv_freq, expected)
    # A static cache of max_position rows is built for seq_len = max_position (vLLM's choice).
    cache = build_cos_sin_cache(HEAD_DIM, seq_len, 10000.0, rope_scaling, MAX_POSITION_EMBEDDINGS)
    angles = torch.arange(seq_len).float()[:, None] * expected[None, :]
    torch.testing.assert_close(cache, torch.cat((angles.cos(), angles.sin()), -1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(
    "rope_scaling, base, rotary_dim", [(None, 10000.0, HEAD_DIM)] + [s[1:] for s in SCALINGS if s[0] != "dynamic"],
    ids=["default"] + [s[0] for s in SCALINGS if s[0] != "dynamic"],
)
def test_cache_matches_transformers_cos_sin(rope_scaling, base, rotary_dim, dtype):
    max_position = 1000
    cache = build_cos_sin_cache(rotary_dim, max_position, base, rope_scaling, MAX_POSITION_EMBEDDINGS, dtype=dtype)
    assert cache.shape == (max_position, rotary_dim) and cache.dtype == dtype and cache.is_contiguous()
    positions = torch.tensor([0, 1, 2, 17, 255, 512, 999])
    cos, sin = _transformers_cos_sin(_config(rope_scaling, base, rotary_dim), positions, torch.float32)
    half = rotary_dim // 2
    # transformers repeats the half-size table twice (cat(freqs, freqs)); the cache stores it once.
    torch.testing.assert_close(cos[0, :, half:], cos[0, :, :half], atol=0, rtol=0)
    expected = torch.cat((cos[0, :, :half], sin[0, :, :half]), -1)
    # float32 sin/cos may differ by an ulp between vector widths; rounding to 16 bits is then exact.
    torch.testing.assert_close(cache[positions].float(), expected.to(dtype).float(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("rope_scaling", [None, SCALINGS[3][1]], ids=["default", "llama3"])
def test_op_with_our_cache_matches_transformers_apply_rotary_pos_emb(rope_scaling):
    tokens, heads, kv_heads = 11, 4, 2
    base = 500000.0
    config = _config(rope_scaling, base, HEAD_DIM)
    positions = torch.randint(0, MAX_POSITION_EMBEDDINGS, (tokens,))
    q = torch.randn(tokens, heads, HEAD_DIM)
    k = torch.randn(tokens, kv_heads, HEAD_DIM)
    cos, sin = _transformers_cos_sin(config, positions, torch.float32)
    # transformers wants [batch, heads, tokens, head_dim].
    q_hf, k_hf = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], cos, sin)
    cache = build_cos_sin_cache(HEAD_DIM, MAX_POSITION_EMBEDDINGS, base, rope_scaling, MAX_POSITION_EMBEDDINGS)
    rotary_embedding(positions, q, k, HEAD_DIM, cache, is_neox=True)
    assert_close(q, q_hf[0].transpose(0, 1).double(), torch.float32)
    assert_close(k, k_hf[0].transpose(0, 1).double(), torch.float32)


BAD = [
    (dict(rotary_dim=63, base=10000.0), ValueError, "rotary_dim"),
    (dict(rotary_dim=0, base=10000.0), ValueError, "rotary_dim"),
    (dict(rotary_dim=64, base=-1.0), ValueError, "base"),
    (dict(rotary_dim=64, base=10000.0, rope_scaling={"rope_type": "longrope"}), ValueError, "longrope"),
    (dict(rotary_dim=64, base=10000.0, rope_scaling={"type": "su"}), ValueError, "'su'"),
    (dict(rotary_dim=64, base=10000.0, rope_scaling="linear"), TypeError, "rope_scaling"),
    (dict(rotary_dim=64, base=10000.0, rope_scaling={"rope_type": "linear"}), ValueError, "factor"),
    (dict(rotary_dim=64, base=10000.0, rope_scaling={"rope_type": "dynamic", "factor": 2.0}), ValueError,
     "max_position_embeddings"),
    (dict(rotary_dim=64, base=10000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0, "high_freq_factor": 4.0,
                                                    "original_max_position_embeddings": 8192}), ValueError,
     "low_freq_factor"),
    (dict(rotary_dim=64, base=10000.0, rope_scaling={"rope_type": "yarn", "factor": 4.0}), ValueError,
     "original_max_position_embeddings"),
    (dict(rotary_dim=64, base=10000.0, rope_scaling={"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}),
     ValueError, "rope_theta"),
]


@pytest.mark.parametrize("kwargs, exc, message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_arguments_raise(kwargs, exc, message):
    with pytest.raises(exc, match=message):
        rope_inv_freq(**kwargs)


def test_bad_max_position_raises():
    with pytest.raises(ValueError, match="max_position"):
        build_cos_sin_cache(64, 0)
