"""Bad input, broken configs and missing weights fail with messages that say what was wrong."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import inference_pio
from inference_pio.plugin import ConfigError
from inference_pio.plugins.bert import Bert_Plugin
from inference_pio.weights import WeightLoadError

from .checkpoints import hf_bert, wordpiece_tokenizer, write_checkpoint

pytest.importorskip("transformers", reason="the checkpoints are written by transformers' BertModel")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    tokenizer = wordpiece_tokenizer()
    return write_checkpoint(tmp_path_factory.mktemp("bert"), hf_bert(tokenizer.get_vocab_size(), num_hidden_layers=1),
                            tokenizer)


@pytest.fixture(scope="module")
def plugin(folder):
    loaded = Bert_Plugin()
    loaded.load(model_path=folder)
    return loaded


def copy_of(folder, tmp_path):
    return shutil.copytree(folder, tmp_path / "copy")


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# ----- bad requests -----

@pytest.mark.parametrize("texts, error, match", [
    ([], ValueError, "texts is empty"),
    ("one text", TypeError, "wrap a single text in a list"),
    (["fine", 3], TypeError, r"texts\[1\] must be a str, got int"),
    ([None], TypeError, r"texts\[0\] must be a str, got NoneType"),
    (42, TypeError, "texts must be a list of str, got int"),
])
def test_bad_texts(plugin, texts, error, match):
    with pytest.raises(error, match=match):
        plugin.embed(texts)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_bad_batch_size(plugin, batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        plugin.embed(["a"], batch_size=batch_size)


def test_bad_token_ids(plugin):
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, "):
        plugin.infer([2, 100000, 3])
    with pytest.raises(ValueError, match="each sequence needs 1..64 tokens"):
        plugin.infer([2] * 65)
    with pytest.raises(TypeError, match="text must be a str"):
        plugin.tokenize(b"bytes")


def test_generate_text_says_this_is_an_embedding_model(plugin):
    with pytest.raises(NotImplementedError, match="embedding .*model: it cannot generate text; use embed"):
        plugin.generate_text("Hello")


def test_uninitialized_and_closed_plugin(folder):
    fresh = Bert_Plugin()
    with pytest.raises(RuntimeError, match="not initialized"):
        fresh.embed(["a"])
    model = inference_pio.load(folder)
    model.close()
    with pytest.raises(RuntimeError, match="not initialized"):
        model.embed(["a"])


# ----- broken checkpoints -----

@pytest.mark.parametrize("changes, match", [
    (dict(hidden_size=62), r"hidden_size \(62\) is not a multiple of num_attention_heads \(4\)"),
    (dict(position_embedding_type="relative_key"), "position_embedding_type 'relative_key' is not supported"),
    (dict(hidden_act="swish"), "hidden_act 'swish' is not supported"),
    (dict(num_hidden_layers="2"), "num_hidden_layers must be int, got str"),
    (dict(model_type="gpt2", architectures=["GPT2Model"]), "not a BERT checkpoint"),
])
def test_broken_config(folder, tmp_path, changes, match):
    bad = copy_of(folder, tmp_path)
    edit_json(bad / "config.json", **changes)
    with pytest.raises(ConfigError, match=match):
        Bert_Plugin().load(model_path=bad)


def test_config_json_not_json(folder, tmp_path):
    bad = copy_of(folder, tmp_path)
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON at line 1"):
        inference_pio.load(bad)


def test_initialize_reports_failure_by_value(folder, tmp_path):
    bad = copy_of(folder, tmp_path)
    edit_json(bad / "config.json", hidden_act="swish")
    plugin = Bert_Plugin()
    assert plugin.initialize(model_path=bad) is False
    assert isinstance(plugin.init_error, ConfigError) and not plugin.is_loaded


def test_missing_weights_file(folder, tmp_path):
    bad = copy_of(folder, tmp_path)
    (bad / "model.safetensors").unlink()
    with pytest.raises(WeightLoadError, match="holds neither model.safetensors"):
        inference_pio.load(bad)


def rewrite_weights(folder, tmp_path, edit):
    bad = copy_of(folder, tmp_path)
    state = load_file(bad / "model.safetensors")
    edit(state)
    save_file(state, bad / "model.safetensors", metadata={"format": "pt"})
    return bad


def test_missing_tensor_is_named(folder, tmp_path):
    bad = rewrite_weights(folder, tmp_path, lambda s: s.pop("encoder.layer.0.attention.self.value.bias"))
    with pytest.raises(WeightLoadError, match="missing: encoder.layer.0.attention.self.value.bias"):
        inference_pio.load(bad)


def test_misshaped_tensor_is_named(folder, tmp_path):
    def shrink(s):
        s["encoder.layer.0.intermediate.dense.weight"] = s["encoder.layer.0.intermediate.dense.weight"][:8].clone()
    bad = rewrite_weights(folder, tmp_path, shrink)
    with pytest.raises(WeightLoadError, match=r"intermediate.dense.weight \(expected \[128, 64\], found \[8, 64\]\)"):
        inference_pio.load(bad)


def test_no_tokenizer(folder, tmp_path):
    bad = copy_of(folder, tmp_path)
    (bad / "tokenizer.json").unlink()
    with pytest.raises(FileNotFoundError, match="no tokenizer in"):
        inference_pio.load(bad)


# ----- broken sentence-transformers files -----

def test_unsupported_module(folder, tmp_path):
    bad = copy_of(folder, tmp_path)
    modules = json.loads((bad / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (bad / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ConfigError, match="module 'sentence_transformers.models.Dense' is not supported"):
        inference_pio.load(bad)


def test_pooling_without_a_mode(folder, tmp_path):
    bad = copy_of(folder, tmp_path)
    (bad / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 64}))
    with pytest.raises(ConfigError, match="no supported pooling mode is switched on"):
        inference_pio.load(bad)


def test_pooling_config_missing(folder, tmp_path):
    bad = copy_of(folder, tmp_path)
    shutil.rmtree(bad / "1_Pooling")
    with pytest.raises(ConfigError, match="1_Pooling/config.json: missing"):
        inference_pio.load(bad)


def test_bad_max_seq_length(folder, tmp_path):
    bad = copy_of(folder, tmp_path)
    edit_json(bad / "sentence_bert_config.json", max_seq_length="long")
    with pytest.raises(ConfigError, match="max_seq_length must be an int"):
        inference_pio.load(bad)


def test_plain_transformers_folder_gets_mean_pooling_without_normalization(folder, tmp_path, plugin):
    plain = copy_of(folder, tmp_path)
    for name in ("modules.json", "sentence_bert_config.json"):
        (plain / name).unlink()
    shutil.rmtree(plain / "1_Pooling")
    model = inference_pio.load(plain)
    vector = model.embed(["Hello world!"])
    assert model.plugin.sentence_config.pooling_modes == ("mean",) and not model.plugin.sentence_config.normalize
    assert model.plugin.max_seq_length == 64
    assert abs(float(vector.norm()) - 1) > 1e-3
    normalized = plugin.embed(["Hello world!"])
    assert float((vector / vector.norm() - normalized).abs().max()) < 1e-5


def test_a_single_file_is_not_a_checkpoint_folder(folder):
    with pytest.raises(ConfigError, match="reads a checkpoint folder .* not a single file"):
        Bert_Plugin().load(model_path=folder / "model.safetensors")


def test_integer_layer_norm_weight_is_refused_by_name(folder, tmp_path):
    bad = copy_of(folder, tmp_path)
    state = load_file(bad / "model.safetensors")
    name = next(n for n in state if n.endswith("embeddings.LayerNorm.weight"))
    state[name] = state[name].to(torch.int32)
    save_file(state, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(WeightLoadError, match=rf"floating point have another dtype: {name} \(I32\)"):
        Bert_Plugin().load(model_path=bad)
