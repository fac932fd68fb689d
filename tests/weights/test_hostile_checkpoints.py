"""Hostile safetensors checkpoints and config.json files: each gives one named, one-line error
(``WeightLoadError`` for weights, ``ConfigError`` for configs) before a model is built."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import inference_pio
from inference_pio.plugin import ConfigError
from inference_pio.weights import WeightLoadError, load_state
from tests.llama.checkpoints import hf_model, write_checkpoint

MAX_MESSAGE = 600


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ckpt"), hf_model(num_hidden_layers=1))


def _copy(src, dst, config_edit=None, weights_edit=None, config_text=None):
    dst.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    config = json.loads((src / "config.json").read_text())
    if config_edit:
        config_edit(config)
    (dst / "config.json").write_text(config_text if config_text is not None else json.dumps(config))
    state = load_file(src / "model.safetensors")
    if weights_edit:
        weights_edit(state)
    save_file(state, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


def _one_line(message: str, where) -> None:
    assert message.startswith(f"{where}: ") and "\n" not in message and len(message) < MAX_MESSAGE, message[:2000]


# ----- config.json -----

CONFIG_ATTACKS = [
    ("num_hidden_layers", 1_000_000, r"num_hidden_layers = 1000000: the checkpoint holds the tensors of 1 layers"),
    ("num_hidden_layers", 2**31, r"num_hidden_layers = 2147483648: the checkpoint holds the tensors of 1 layers"),
    ("num_hidden_layers", 0, r"LlamaConfig.num_hidden_layers must be positive, got 0"),
    ("num_attention_heads", 0, r"LlamaConfig.num_attention_heads must be positive, got 0"),
    ("num_key_value_heads", 0, r"LlamaConfig.num_key_value_heads must be positive, got 0"),
    ("num_key_value_heads", 3, r"num_attention_heads \(4\) must be a multiple of num_key_value_heads \(3\)"),
    ("hidden_size", -64, r"LlamaConfig.hidden_size must be positive, got -64"),
    ("intermediate_size", -1, r"LlamaConfig.intermediate_size must be positive, got -1"),
    ("vocab_size", 0, r"LlamaConfig.vocab_size must be positive, got 0"),
    ("head_dim", 2**30, r"head_dim \(1073741824\) = \d+ does not match the 64 rows of model.layers.0.self_attn.q_proj"),
    ("rms_norm_eps", -1e-6, r"LlamaConfig.rms_norm_eps must be positive, got -1e-06"),
    ("rms_norm_eps", "x", r"LlamaConfig.rms_norm_eps must be float, got str 'x'"),
    ("rope_theta", 0, r"LlamaConfig.rope_theta must be positive, got 0"),
    ("rope_scaling", {"rope_type": "linear", "factor": 0}, r"rope_scaling\['factor'\] must be a positive number, got 0"),
    ("max_position_embeddings", 0, r"LlamaConfig.max_position_embeddings must be positive, got 0"),
    ("eos_token_id", "abc", r"LlamaConfig.eos_token_id must be a token id or a list of them, got 'abc'"),
    ("eos_token_id", [0, None], r"LlamaConfig.eos_token_id must be a token id or a list of them"),
    ("vocab_size", "x" * 10_000_000, r"LlamaConfig.vocab_size must be int, got str 'xxxx.*\.\.\.\[\+\d+ chars\]"),
]


@pytest.mark.parametrize("key, value, pattern", CONFIG_ATTACKS, ids=[f"{k}={str(v)[:20]}" for k, v, _ in CONFIG_ATTACKS])
def test_bad_config_value_names_file_key_and_value(checkpoint, tmp_path, key, value, pattern):
    bad = _copy(checkpoint, tmp_path / "bad", config_edit=lambda c: c.update({key: value}))
    with pytest.raises(ConfigError, match=pattern) as info:
        inference_pio.load(bad, max_seq_len=64, max_batch_size=1)
    _one_line(str(info.value), bad / "config.json")


@pytest.mark.parametrize("text", ['{"a": ' * 100_000 + "1" + "}" * 100_000, "[" * 100_000 + "]" * 100_000])
def test_deeply_nested_config_json(checkpoint, tmp_path, text):
    bad = _copy(checkpoint, tmp_path / "bad", config_text=text)
    with pytest.raises(ConfigError, match="JSON nested too deeply") as info:
        inference_pio.load(bad)
    _one_line(str(info.value), bad / "config.json")


# ----- weights -----

def test_integer_norm_weight_is_refused_by_name(checkpoint, tmp_path):
    def to_int(state):
        state["model.norm.weight"] = state["model.norm.weight"].to(torch.int32)
    bad = _copy(checkpoint, tmp_path / "bad", weights_edit=to_int)
    with pytest.raises(WeightLoadError, match=r"floating point have another dtype: model.norm.weight \(I32\)") as info:
        inference_pio.load(bad, max_seq_len=64, max_batch_size=1)
    _one_line(str(info.value), bad)


def _sharded(folder, shard_name):
    state = {"a.weight": torch.randn(4, 4), "b.weight": torch.randn(4)}
    target = folder / "shards" / "part.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, target)
    weight_map = {"a.weight": shard_name, "b.weight": shard_name}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return state


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "shards/../../outside.safetensors",
                                   "..\\outside.safetensors", "C:\\x.safetensors", ""])
def test_index_may_not_point_outside_the_folder(tmp_path, shard):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_file({"a.weight": torch.randn(4, 4), "b.weight": torch.randn(4)}, tmp_path / "outside.safetensors")
    _sharded(folder, shard)
    with pytest.raises(WeightLoadError, match=r"weight_map names shard .*, outside the checkpoint folder"):
        load_state(folder)


def test_index_may_name_a_shard_in_a_subfolder(tmp_path):
    state = _sharded(tmp_path, "shards/part.safetensors")
    loaded = load_state(tmp_path)
    assert all(torch.equal(loaded[name], t) for name, t in state.items())


@pytest.mark.parametrize("name, text, pattern", [
    ("tokenizer_config.json", "[" * 100_000 + "]" * 100_000, r"tokenizer_config.json is JSON nested too deeply"),
    ("tokenizer.json", json.dumps({"model": {"type": "BPE", "vocab": {"a": "zero"}, "merges": []}}),
     r"cannot load .*tokenizer.json"),
])
def test_bad_tokenizer_files_name_the_file(checkpoint, tmp_path, name, text, pattern):
    bad = _copy(checkpoint, tmp_path / "bad")
    (bad / name).write_text(text)
    with pytest.raises(ValueError, match=pattern) as info:
        inference_pio.load(bad, max_seq_len=64, max_batch_size=1)
    assert "\n" not in str(info.value) and len(str(info.value)) < MAX_MESSAGE
