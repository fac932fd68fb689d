"""Tensor parallelism from a GGUF file: each rank reads its rows / block-aligned columns of the quantized
matrices; TP=2 over gloo (two processes) matches the plugin's TP=1 load of the same file."""

from __future__ import annotations

import json

import pytest
import torch

from inference_pio.distributed.tensor_parallel import tensor_parallel_model
from inference_pio.plugins.llama.config import LlamaConfig
from inference_pio.plugins.llama.model import LlamaModel
from inference_pio.plugins.llama.plugin import Llama_Plugin
from inference_pio.quant import QuantizedTensor
from inference_pio.weights import load_gguf_state, open_gguf
from inference_pio.weights.gguf_slices import ColumnSliceError, GGUFSlices
from tests.distributed.test_tensor_parallel import run_ranks
from tests.distributed.tp_workload import PROMPT_LEN, TOKENS, greedy
from tests.gguf.writer import write_gguf
from tests.llama.checkpoints import hf_model, load_plugin, teacher_forced_logits

# GQA 4/2 heads of 16; an odd vocabulary (501: the last rank's rows are padded); 192 intermediate rows,
# so each of 2 ranks holds 96 input columns of ffn_down (3 blocks of 32) and 32 of attn_output (1 block).
SHAPE = dict(vocab_size=501, intermediate_size=192)
# K-quants need 256-column blocks: 4 heads of 128, each rank's 256 columns of attn_output and ffn_down one block.
K_SHAPE = dict(vocab_size=501, hidden_size=512, intermediate_size=512)
CASES = {  # name -> (model shape, matrix type, per-tensor overrides)
    "Q8_0": (SHAPE, "Q8_0", None),
    "Q4_0": (SHAPE, "Q4_0", None),
    "F16": (SHAPE, "F16", None),
    # llama.cpp's Q4_K_M keeps V in Q6_K: q/k/v cannot fuse, each rank keeps them as parts.
    "Q4_K+Q6_K": (K_SHAPE, "Q4_K", {"attn_v.weight": "Q6_K", "ffn_down.weight": "Q6_K"}),
}


def write_case(folder, name: str, seed: int = 3):
    shape, qtype, overrides = CASES[name]
    return write_gguf(folder / f"tiny-{name.replace('+', '-')}.gguf", hf_model(seed=seed, **shape), qtype=qtype,
                      overrides=overrides, tokenizer=None)


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_tp2_from_gguf_matches_tp1_on_the_same_file(tmp_path, name):
    path = write_case(tmp_path, name)
    results = run_ranks(path, tmp_path, "parity")
    assert all(rc == 0 for rc, _ in results), results
    from safetensors.torch import load_file

    tp_logits = load_file(str(tmp_path / "logits.safetensors"))["logits"]
    reference = load_plugin(Llama_Plugin, path)  # the whole file in one process
    expected = teacher_forced_logits(reference, TOKENS, PROMPT_LEN)
    # Same blocks, same products; only the order of the row-parallel sums differs.
    torch.testing.assert_close(tp_logits, expected, rtol=0, atol=1e-4 * max(1.0, float(expected.abs().max())))
    assert json.loads((tmp_path / "greedy.json").read_text()) == greedy(reference, TOKENS[:PROMPT_LEN], 24)


@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_reads_its_heads_rows_and_columns_of_the_quantized_blocks(tmp_path, rank):
    path = write_case(tmp_path, "Q4_0")
    gguf = open_gguf(path)
    cfg = LlamaConfig.from_gguf(gguf)
    # The whole file, Q/K un-permuted over all heads: what one process loads.
    full = load_gguf_state(gguf, qk_heads=(cfg.num_attention_heads, cfg.num_key_value_heads))
    slices = GGUFSlices(gguf, torch.float32)
    h, q, kv = cfg.hidden_size, cfg.q_size // 2, cfg.kv_size // 2
    for name, rows, heads in (("q_proj", q, cfg.num_attention_heads // 2), ("k_proj", kv, cfg.num_key_value_heads // 2),
                              ("v_proj", kv, None)):
        hf = f"model.layers.1.self_attn.{name}.weight"
        part = slices.read(hf, full[hf].shape, rows=(rank * rows, rows), heads=heads)
        assert isinstance(part, QuantizedTensor) and part.shape == (rows, h)
        assert torch.equal(part.data, full[hf].data[rank * rows:(rank + 1) * rows]), name
    down = "model.layers.0.mlp.down_proj.weight"
    inter = cfg.intermediate_size // 2
    part = slices.read(down, full[down].shape, cols=(rank * inter, inter))
    assert part.shape == (h, inter)
    torch.testing.assert_close(part.dequantize(), full[down].dequantize()[:, rank * inter:(rank + 1) * inter],
                               rtol=0, atol=0)
    norm = slices.read("model.layers.0.input_layernorm.weight", (h,))
    assert torch.equal(norm, full["model.layers.0.input_layernorm.weight"])


def test_dense_gguf_slices_equal_the_whole_tensors_rows(tmp_path):
    path = write_case(tmp_path, "F16")
    gguf = open_gguf(path)
    cfg = LlamaConfig.from_gguf(gguf)
    full = load_gguf_state(gguf, qk_heads=(cfg.num_attention_heads, cfg.num_key_value_heads))
    slices = GGUFSlices(gguf, torch.float32)
    q = "model.layers.0.self_attn.q_proj.weight"
    rows = slices.read(q, full[q].shape, rows=(cfg.q_size // 2, cfg.q_size // 2), heads=cfg.num_attention_heads // 2)
    assert torch.equal(rows, full[q][cfg.q_size // 2:])
    o = "model.layers.0.self_attn.o_proj.weight"
    cols = slices.read(o, full[o].shape, cols=(3, 5))  # dense: any columns
    assert torch.equal(cols, full[o][:, 3:8])


def test_row_parallel_columns_that_cut_blocks_are_refused_by_name(tmp_path):
    # 160 intermediate rows: each of 2 ranks would need 80 input columns of ffn_down, 2.5 Q8_0 blocks.
    path = write_gguf(tmp_path / "uneven.gguf", hf_model(seed=1, vocab_size=501, intermediate_size=160),
                      qtype="Q8_0", tokenizer=None)
    gguf = open_gguf(path)
    cfg = LlamaConfig.from_gguf(gguf, dtype="float32")
    with pytest.raises(ColumnSliceError, match=r"blk\.0\.ffn_down\.weight \(Q8_0, shape \[64, 160\]\): columns 0\.\.80 "
                                               r"\(80 of 160\) cut Q8_0's 32-element blocks: tensor parallelism over 2 "
                                               r"ranks gives each rank 80 of its 160 input columns"):
        tensor_parallel_model(LlamaModel, cfg, 0, 2, gguf=gguf)  # refused while reading: no process group needed


def test_a_tensor_of_the_wrong_shape_is_refused_by_name(tmp_path):
    path = write_case(tmp_path, "Q8_0")
    slices = GGUFSlices(open_gguf(path), torch.float32)
    with pytest.raises(ValueError, match=r"blk\.0\.ffn_up\.weight has shape \[192, 64\], the model needs \[160, 64\]"):
        slices.read("model.layers.0.mlp.up_proj.weight", (160, 64), rows=(0, 80))


def test_a_rank_of_a_mixed_type_file_keeps_its_quantized_parts(tmp_path):
    from inference_pio.layers import QuantizedEmbedding, QuantizedLinear
    from inference_pio.layers.row_split import RowSplitLinear

    path = write_case(tmp_path, "Q4_K+Q6_K")
    gguf = open_gguf(path)
    cfg = LlamaConfig.from_gguf(gguf, dtype="float32")
    model = tensor_parallel_model(LlamaModel, cfg, 1, 2, gguf=gguf)  # building needs no process group
    attn, mlp = model.layers[0].self_attn, model.layers[0].mlp
    assert isinstance(attn.qkv_proj, RowSplitLinear)  # V is Q6_K: q/k/v cannot share one quantized matrix
    assert [(p.qweight.qtype_name, p.out_features) for p in attn.qkv_proj.parts] == [
        ("Q4_K", cfg.q_size // 2), ("Q4_K", cfg.kv_size // 2), ("Q6_K", cfg.kv_size // 2)]
    assert isinstance(mlp.gate_up_proj, QuantizedLinear) and mlp.gate_up_proj.out_features == cfg.intermediate_size
    down = mlp.down_proj.linear
    assert (down.qweight.qtype_name, down.in_features, down.out_features) == ("Q6_K", 256, cfg.hidden_size)
    assert isinstance(model.embed_tokens.table, QuantizedEmbedding)
    assert model.embed_tokens.table.num_embeddings == model.lm_head.linear.out_features == 251  # ceil(501 / 2)


@pytest.mark.slow
def test_the_plugin_loads_its_rank_of_a_gguf_and_generates_what_tp1_does(tmp_path):
    from tests.distributed.tp_workload import engine_tokens

    path = write_case(tmp_path, "Q4_0", seed=4)
    results = run_ranks(path, tmp_path, "plugin")  # inference_pio.load(path, tensor_parallel_size=2) on each rank
    assert all(rc == 0 for rc, _ in results), results
    assert "followed" in results[1][1]
    reference = load_plugin(Llama_Plugin, path)
    assert json.loads((tmp_path / "engine.json").read_text()) == engine_tokens(reference.model, reference.kv_cache)
