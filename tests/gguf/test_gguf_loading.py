"""Loading GGUF files as a user does, and the errors bad files give."""

from __future__ import annotations

import numpy as np
import pytest

import inference_pio
from inference_pio.plugin import ConfigError, NoPluginForModelError, PluginManager
from inference_pio.plugins.llama import Llama_Plugin, LlamaConfig
from inference_pio.weights import WeightLoadError
from inference_pio.weights.gguf_file import open_gguf, read_gguf_architecture
from inference_pio.weights.gguf_loader import hf_tensor_name, unpermute_qk_rows

from .writer import permute_qk, write_gguf


def test_inference_pio_load_picks_the_llama_plugin_from_the_gguf_and_chats(f32_gguf):
    model = inference_pio.load(f32_gguf, max_seq_len=128, max_batch_size=2)
    assert model.plugin.metadata.name == "Llama"
    ids = model.apply_chat_template([{"role": "user", "content": "Hello world"}])
    assert model.detokenize(ids, skip_special_tokens=False) == "<|im_start|>user\nHello world<|im_end|>\n" \
                                                              "<|im_start|>assistant\n"
    [result] = model.generate(ids, max_tokens=5, ignore_eos=True, temperature=0)
    assert len(result.token_ids) == 5 and result.finish_reason == "length"
    model.close()


def test_manager_reads_the_architecture_from_the_header(f32_gguf):
    assert read_gguf_architecture(f32_gguf) == "llama"
    assert PluginManager().plugin_for_checkpoint(f32_gguf).name == "Llama"


def test_unpermute_undoes_the_converter_permutation_on_values_and_block_rows():
    rng = np.random.default_rng(0)
    for rows, heads in ((64, 4), (32, 2), (96, 3)):
        values = rng.standard_normal((rows, 8)).astype(np.float32)
        assert np.array_equal(unpermute_qk_rows(permute_qk(values, heads), heads), values)
        blocks = rng.integers(0, 256, (rows, 34), dtype=np.uint8)  # Q8_0 rows move whole
        assert np.array_equal(unpermute_qk_rows(permute_qk(blocks, heads), heads), blocks)
    assert not np.array_equal(permute_qk(values, 3), values)  # the check above is not vacuous


def test_tensor_names_map_to_transformers():
    assert hf_tensor_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_tensor_name("output.weight") == "lm_head.weight"
    assert hf_tensor_name("blk.12.attn_k.bias") == "model.layers.12.self_attn.k_proj.bias"
    assert hf_tensor_name("blk.0.ffn_norm.weight") == "model.layers.0.post_attention_layernorm.weight"
    assert hf_tensor_name("blk.0.ffn_gate_exps.weight") is None and hf_tensor_name("rope_freqs.weight") is None


# ----- bad files -----

def test_truncated_file_names_the_file(f32_gguf, tmp_path):
    data = f32_gguf.read_bytes()
    for cut in (len(data) * 3 // 5, len(data) - 7):
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(data[:cut])
        with pytest.raises(WeightLoadError, match=rf"{path.name}: tensor '.*' ends at byte \d+ but the file has "
                                                  rf"{cut} bytes: the file is truncated"):
            inference_pio.load(path)
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(data[:60])
    with pytest.raises(WeightLoadError, match="header.gguf: .* at byte .*truncated"):
        inference_pio.load(header_only)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(WeightLoadError, match="empty.gguf: not a GGUF file"):
        inference_pio.load(empty)


def test_corrupt_counts_are_errors_not_allocations(f32_gguf, tmp_path):
    data = bytearray(f32_gguf.read_bytes())
    data[16:24] = (1 << 60).to_bytes(8, "little")  # metadata count
    path = tmp_path / "huge-count.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(WeightLoadError, match="huge-count.gguf: metadata count .* runs past the end of the file"):
        open_gguf(path)


def test_reader_agrees_with_the_gguf_package(f32_gguf, tiny_hf, gguf_folder):
    from gguf import GGUFReader

    path = write_gguf(gguf_folder / "agree.gguf", tiny_hf, qtype="Q4_1", tokenizer="llama")
    for file in (f32_gguf, path):
        ours, theirs = open_gguf(file), GGUFReader(file)
        fields = {k: f.contents() for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
        assert ours.metadata.keys() == fields.keys()
        for key, value in fields.items():
            assert ours.metadata[key] == (pytest.approx(value) if isinstance(value, float) else value), key
        assert [(t.name, t.shape, t.ggml_type) for t in ours.tensors] == \
            [(t.name, tuple(reversed(t.shape.tolist())), int(t.tensor_type)) for t in theirs.tensors]
        for mine, reference in zip(ours.tensors, theirs.tensors):
            assert np.array_equal(ours.data(mine), np.asarray(reference.data).view(np.uint8).reshape(-1))


def test_corrupt_magic_names_the_file(f32_gguf, tmp_path):
    path = tmp_path / "bad-magic.gguf"
    path.write_bytes(b"GGML" + f32_gguf.read_bytes()[4:])
    with pytest.raises(WeightLoadError, match="bad-magic.gguf: not a GGUF file"):
        inference_pio.load(path)
    with pytest.raises(WeightLoadError, match="bad-magic.gguf: not a GGUF file"):
        open_gguf(path)


def test_unsupported_quantization_type_names_tensor_and_supported_types(tiny_hf, gguf_folder):
    path = write_gguf(gguf_folder / "mxfp4.gguf", tiny_hf, qtype="Q8_0", overrides={"ffn_down.weight": "MXFP4"})
    with pytest.raises(WeightLoadError, match=r"blk\.0\.ffn_down\.weight \(MXFP4\).*supported: F32, F16, BF16, Q8_0, "
                                              r"Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K"):
        Llama_Plugin().load(model_path=path)


def test_unknown_architecture_names_what_is_supported(tiny_hf, gguf_folder):
    path = write_gguf(gguf_folder / "rwkv.gguf", tiny_hf, arch="rwkv6")
    with pytest.raises(NoPluginForModelError, match="model_type 'rwkv6'.*known model types: .*llama"):
        inference_pio.load(path)
    with pytest.raises(ConfigError, match="architecture 'rwkv6' is not supported by LlamaConfig .supported: llama"):
        LlamaConfig.from_gguf(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(WeightLoadError, match="nowhere.gguf: no such GGUF file"):
        Llama_Plugin().load(model_path=tmp_path / "nowhere.gguf")
    with pytest.raises(WeightLoadError, match="nowhere.gguf: no such GGUF file"):
        inference_pio.load(tmp_path / "nowhere.gguf")
