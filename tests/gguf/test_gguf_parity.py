"""Our Llama plugin on GGUF files against transformers loading the same files (random tiny models).

transformers dequantizes every block to float32, so it computes with exactly the values our
quantized layers hold: logits agree to float32 rounding, greedy continuations token for token.
"""

from __future__ import annotations

import pytest
import torch

from inference_pio.layers import QuantizedEmbedding, QuantizedLinear
from inference_pio.plugins.llama import Llama_Plugin
from inference_pio.layers.row_split import RowSplitLinear
from tests.llama.checkpoints import (
    BF16_TOL, assert_greedy_parity, hf_logits, hf_model, load_plugin, random_tokens, teacher_forced_logits,
)

from .conftest import VOCAB, hf_from_gguf
from .writer import write_gguf

DENSE_TOL = dict(rtol=1e-4, atol=1e-4)
QUANT_TOL = dict(rtol=1e-3, atol=1e-3)  # same dequantized values; kernels may sum in another order

CASES = {  # name: (ggml type of the matrices, per-tensor overrides, tied embeddings)
    "f32": ("F32", None, False),
    "f16": ("F16", None, False),
    "q8_0": ("Q8_0", None, False),
    "q4_0_v_and_down_in_q8_0": ("Q4_0", {"attn_v.weight": "Q8_0", "ffn_down.weight": "Q8_0"}, False),
    "q4_1_tied": ("Q4_1", None, True),
}


@pytest.fixture(scope="module")
def case(gguf_folder):
    """``case(name)`` -> (GGUF path, transformers' model loaded from it), written once per module."""
    built = {}

    def get(name):
        if name not in built:
            qtype, overrides, tied = CASES[name]
            hf = hf_model(vocab_size=VOCAB, tie_word_embeddings=tied)
            path = write_gguf(gguf_folder / f"{name}.gguf", hf, qtype=qtype, overrides=overrides)
            built[name] = path, hf_from_gguf(path)
        return built[name]
    return get


@pytest.mark.parametrize("name", CASES)
def test_logits_match_transformers_on_the_same_gguf(case, name):
    path, reference = case(name)
    plugin = load_plugin(Llama_Plugin, path)
    tokens = random_tokens(60, seed=1, vocab=VOCAB)  # 36-token prompt (3 KV blocks), then 24 decode steps
    tolerance = DENSE_TOL if name in ("f32", "f16") else QUANT_TOL
    torch.testing.assert_close(teacher_forced_logits(plugin, tokens, prompt_len=36), hf_logits(reference, tokens),
                               **tolerance)


@pytest.mark.parametrize("name", CASES)
def test_quantized_weights_stay_quantized_and_fuse_when_their_types_match(case, name):
    path, _ = case(name)
    model = load_plugin(Llama_Plugin, path).model
    attn, mlp = model.layers[0].self_attn, model.layers[0].mlp
    if name in ("f32", "f16"):
        assert attn.qkv_proj.weight.dtype == torch.float32 and attn.qkv_proj.weight.shape == (64 + 2 * 32, 64)
        return
    assert isinstance(model.embed_tokens, QuantizedEmbedding)
    assert isinstance(mlp.gate_up_proj, QuantizedLinear) and mlp.gate_up_proj.qweight.shape == (2 * 160, 64)
    assert isinstance(model.lm_head, QuantizedLinear)
    if name == "q4_0_v_and_down_in_q8_0":  # Q4_0 q/k beside a Q8_0 v: no common block type to fuse into
        assert isinstance(attn.qkv_proj, RowSplitLinear)
        assert [p.qweight.qtype_name for p in attn.qkv_proj.parts] == ["Q4_0", "Q4_0", "Q8_0"]
        assert mlp.down_proj.qweight.qtype_name == "Q8_0"
    else:
        assert isinstance(attn.qkv_proj, QuantizedLinear) and attn.qkv_proj.qweight.shape == (64 + 2 * 32, 64)
    if name == "q4_1_tied":
        assert model.lm_head.qweight is model.embed_tokens.qweight


@pytest.mark.parametrize("name", ["f32", "q4_1_tied"])
def test_greedy_continuation_identical(case, name):
    path, reference = case(name)
    assert_greedy_parity(reference, load_plugin(Llama_Plugin, path), list(range(5, 41)), new_tokens=32)


def test_bfloat16_activations_over_quantized_weights(case):
    """dtype="bfloat16" runs bf16 activations over the same blocks: within bf16 rounding of float32."""
    path, reference = case("q8_0")
    plugin = load_plugin(Llama_Plugin, path, dtype="bfloat16")
    assert plugin.model.compute_dtype == torch.bfloat16
    tokens = random_tokens(40, seed=2, vocab=VOCAB)
    torch.testing.assert_close(teacher_forced_logits(plugin, tokens, prompt_len=24), hf_logits(reference, tokens),
                               **BF16_TOL)


def test_k_quants_q4_k_and_q6_k_like_a_q4_k_m_file(gguf_folder):
    """Q4_K matrices with V and down in Q6_K (the Q4_K_M recipe): 256-value super-blocks, so a
    model 256 wide; mixed q/k/v types get a RowSplitLinear."""
    hf = hf_model(vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=1,
                  num_attention_heads=4, num_key_value_heads=2)
    path = write_gguf(gguf_folder / "q4_k_m.gguf", hf, qtype="Q4_K",
                      overrides={"attn_v.weight": "Q6_K", "ffn_down.weight": "Q6_K", "token_embd.weight": "Q8_0",
                                 "output.weight": "Q6_K"})
    plugin = load_plugin(Llama_Plugin, path)
    attn = plugin.model.layers[0].self_attn.qkv_proj
    assert [p.qweight.qtype_name for p in attn.parts] == ["Q4_K", "Q4_K", "Q6_K"]
    assert plugin.model.lm_head.qweight.qtype_name == "Q6_K"
    tokens = random_tokens(30, seed=4, vocab=VOCAB)
    torch.testing.assert_close(teacher_forced_logits(plugin, tokens, prompt_len=20),
                               hf_logits(hf_from_gguf(path), tokens), **QUANT_TOL)


def test_f32_gguf_holds_the_original_model(tiny_hf, f32_gguf):
    """The converter's Q/K permutation is undone: the F32 file reproduces the model it was written from."""
    plugin = load_plugin(Llama_Plugin, f32_gguf)
    tokens = random_tokens(40, seed=3, vocab=VOCAB)
    torch.testing.assert_close(teacher_forced_logits(plugin, tokens, prompt_len=40), hf_logits(tiny_hf, tokens),
                               **DENSE_TOL)


def test_config_read_from_gguf_metadata(f32_gguf, tiny_hf):
    from inference_pio.plugins.llama import LlamaConfig

    cfg, hf = LlamaConfig.from_gguf(f32_gguf), tiny_hf.config
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == \
        (hf.vocab_size, hf.hidden_size, hf.intermediate_size, hf.num_hidden_layers)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (4, 2, 16)
    assert cfg.rms_norm_eps == pytest.approx(hf.rms_norm_eps) and cfg.rope_theta == hf.rope_parameters["rope_theta"]
    assert cfg.max_position_embeddings == hf.max_position_embeddings and cfg.tie_word_embeddings is False
    assert cfg.model_path == str(f32_gguf) and cfg.name_or_path == "tiny-llama"
