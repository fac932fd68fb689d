"""Our BERT plugin against transformers' BertModel + sentence-transformers pooling on the same random weights."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

import inference_pio
from inference_pio.plugin import PluginManager
from inference_pio.plugins.bert import Bert_Plugin

from .checkpoints import (MAX_SEQ_LENGTH, SENTENCES, hf_bert, hf_tokenizer, reference_embeddings, wordpiece_tokenizer,
                          write_checkpoint)

pytest.importorskip("transformers", reason="the parity reference is transformers' BertModel")

TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tokenizer():
    return wordpiece_tokenizer()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    """Mean pooling + Normalize, max_seq_length 24: (hf_model, folder, plugin)."""
    hf = hf_bert(tokenizer.get_vocab_size())
    folder = write_checkpoint(tmp_path_factory.mktemp("bert"), hf, tokenizer)
    plugin = Bert_Plugin()
    plugin.load(model_path=folder)
    return hf, folder, plugin


def load(folder, **kw) -> Bert_Plugin:
    plugin = Bert_Plugin()
    plugin.load(model_path=folder, **kw)
    return plugin


def packed_vs_padded_hidden(plugin, hf, ids: list[list[int]]):
    """(ours per sequence, transformers per sequence) last hidden states for a batch of id lists."""
    hidden, cu = plugin.hidden_states(ids)
    ours = [hidden[cu[b]:cu[b + 1]].float() for b in range(len(ids))]
    width = max(map(len, ids))
    padded = torch.tensor([seq + [0] * (width - len(seq)) for seq in ids])
    mask = torch.tensor([[1] * len(seq) + [0] * (width - len(seq)) for seq in ids])
    with torch.no_grad():
        theirs = hf(input_ids=padded, attention_mask=mask).last_hidden_state
    return ours, [theirs[b, :len(seq)] for b, seq in enumerate(ids)]


ACTIVATIONS = {"gelu": {}, "gelu_new": dict(hidden_act="gelu_new"), "relu": dict(hidden_act="relu"),
               # head_dim 10: not a multiple of 16, so attention falls back from the CPU kernel to the reference
               "odd_head_dim": dict(hidden_size=40, num_attention_heads=4, intermediate_size=72)}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_hidden_states_match_transformers(tmp_path, tokenizer, name):
    hf = hf_bert(tokenizer.get_vocab_size(), seed=3, **ACTIVATIONS[name])
    plugin = load(write_checkpoint(tmp_path, hf, tokenizer))
    torch.manual_seed(0)
    ids = [torch.randint(0, tokenizer.get_vocab_size(), (n,)).tolist() for n in (1, 7, 33, 64, 2)]
    fallback = pytest.warns(UserWarning, match="falling back to the reference") if name == "odd_head_dim" else nullcontext()
    with fallback:
        ours, theirs = packed_vs_padded_hidden(plugin, hf, ids)
    for b, (o, t) in enumerate(zip(ours, theirs)):
        torch.testing.assert_close(o, t, **TOL, msg=lambda m: f"sequence {b} ({len(ids[b])} tokens): {m}")


def test_masked_lm_checkpoint_under_bert_prefix(tmp_path, tokenizer):
    hf = hf_bert(tokenizer.get_vocab_size(), masked_lm=True)
    plugin = load(write_checkpoint(tmp_path, hf, tokenizer))
    ours, theirs = packed_vs_padded_hidden(plugin, hf.bert, [[2, 40, 41, 42, 3], [2, 7, 3]])
    for o, t in zip(ours, theirs):
        torch.testing.assert_close(o, t, **TOL)


def test_embeddings_match_transformers_mean_normalized(checkpoint):
    hf, folder, plugin = checkpoint
    ours = plugin.embed(SENTENCES)
    expected = reference_embeddings(hf, hf_tokenizer(folder), SENTENCES, ["mean"], True, MAX_SEQ_LENGTH)
    assert ours.dtype == torch.float32 and ours.shape == (len(SENTENCES), 64) and ours.device.type == "cpu"
    torch.testing.assert_close(ours, expected, **TOL)
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(len(SENTENCES)))


POOLINGS = {
    "cls": ["cls"], "max": ["max"], "mean_sqrt_len_tokens": ["mean_sqrt_len_tokens"],
    "weightedmean": ["weightedmean"], "lasttoken": ["lasttoken"], "cls+max+mean": ["cls", "max", "mean"],
}


@pytest.mark.parametrize("name", POOLINGS)
def test_pooling_modes_match_sentence_transformers(tmp_path, tokenizer, checkpoint, name):
    hf = checkpoint[0]
    modes = POOLINGS[name]
    keys = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens", "mean": "pooling_mode_mean_tokens",
            "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
            "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}
    folder = write_checkpoint(tmp_path, hf, tokenizer, pooling={keys[m]: True for m in modes}, normalize=False)
    plugin = load(folder)
    ours = plugin.embed(SENTENCES)
    expected = reference_embeddings(hf, hf_tokenizer(folder), SENTENCES, modes, False, MAX_SEQ_LENGTH)
    assert plugin.embedding_dim == 64 * len(modes) == ours.shape[1]
    torch.testing.assert_close(ours, expected, **TOL)
    assert not torch.allclose(ours.norm(dim=1), torch.ones(len(SENTENCES)))  # no Normalize module: left as pooled


def test_padding_invariance_alone_or_among_longer_texts(checkpoint):
    plugin = checkpoint[2]
    alone = plugin.embed(["Hello world!"])
    among = plugin.embed([SENTENCES[4], "Hello world!", SENTENCES[1] * 2])
    torch.testing.assert_close(among[1:2], alone, rtol=1e-6, atol=1e-6)
    one_by_one = plugin.embed(SENTENCES, batch_size=1)
    torch.testing.assert_close(plugin.embed(SENTENCES, batch_size=4), one_by_one, rtol=1e-6, atol=1e-6)


def test_truncation_to_max_seq_length(checkpoint):
    hf, folder, plugin = checkpoint
    long_text = SENTENCES[4]
    assert len(plugin.tokenize(long_text)) > MAX_SEQ_LENGTH  # tokenize itself does not cut
    assert len(plugin.tokenize(long_text, truncation=True)) == plugin.max_seq_length == MAX_SEQ_LENGTH
    # Everything after the cut is ignored, so a longer tail gives the same vector.
    torch.testing.assert_close(plugin.embed([long_text]), plugin.embed([long_text + " and more words after"]),
                               rtol=0, atol=0)
    expected = reference_embeddings(hf, hf_tokenizer(folder), [long_text], ["mean"], True, MAX_SEQ_LENGTH)
    torch.testing.assert_close(plugin.embed([long_text]), expected, **TOL)


def test_max_seq_len_override_and_position_limit(tmp_path, tokenizer, checkpoint):
    hf = checkpoint[0]
    # No sentence_bert length: the model's positions (64) bound it; a smaller max_seq_len wins.
    folder = write_checkpoint(tmp_path, hf, tokenizer, max_seq_length=None)
    assert load(folder).max_seq_length == 64
    assert load(folder, max_seq_len=10).max_seq_length == 10


def test_tokenizer_json_padding_settings_are_ignored(checkpoint):
    plugin = checkpoint[2]
    ids = plugin.tokenize("Hello world!")
    assert ids == hf_tokenizer(checkpoint[1])("Hello world!")["input_ids"]
    assert 0 not in ids and ids[0] == plugin.tokenizer.token_to_id("[CLS]")
    assert plugin.detokenize(ids) == "Hello world!"


def test_strip_and_lower_case_as_sentence_bert_config_says(tmp_path, tokenizer, checkpoint):
    hf, folder, plugin = checkpoint
    torch.testing.assert_close(plugin.embed(["  Hello world!\n"]), plugin.embed(["Hello world!"]), rtol=0, atol=0)
    assert not torch.allclose(plugin.embed(["HELLO"]), plugin.embed(["hello"]))  # the tokenizer is cased
    lowering = load(write_checkpoint(tmp_path, hf, tokenizer, do_lower_case=True))
    torch.testing.assert_close(lowering.embed(["HELLO World"]), lowering.embed(["hello world"]), rtol=0, atol=0)


def test_bfloat16_close_to_float32(checkpoint):
    folder, plugin = checkpoint[1], checkpoint[2]
    low = load(folder, dtype="bfloat16")
    assert low.model.word_embeddings.weight.dtype == torch.bfloat16
    vectors = low.embed(SENTENCES)
    assert vectors.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(vectors, plugin.embed(SENTENCES)).min() > 0.99


def test_plugin_manager_picks_bert_and_load_gives_a_model_that_embeds(checkpoint):
    hf, folder, plugin = checkpoint
    assert PluginManager().plugin_for_checkpoint(folder).name == "Bert"
    # Generation-engine options callers pass to every model are accepted (and have nothing to do here).
    model = inference_pio.load(folder, num_kv_blocks=8, prefill_budget=64, max_batch_size=2)
    try:
        assert isinstance(model.plugin, Bert_Plugin)
        torch.testing.assert_close(model.embed(SENTENCES), plugin.embed(SENTENCES), rtol=0, atol=0)
        torch.testing.assert_close(model.embed("Hello world!"), plugin.embed(["Hello world!"]), rtol=0, atol=0)
        torch.testing.assert_close(model.embed(SENTENCES, batch_size=2), plugin.embed(SENTENCES), rtol=1e-6, atol=1e-6)
    finally:
        model.close()
    assert not model.plugin.is_loaded


def test_infer_text_texts_and_token_ids(checkpoint):
    hf, _, plugin = checkpoint
    torch.testing.assert_close(plugin.infer("Hello world!"), plugin.embed(["Hello world!"])[0])
    torch.testing.assert_close(plugin.infer(["a", "b"]), plugin.embed(["a", "b"]))
    ours, theirs = packed_vs_padded_hidden(plugin, hf, [[2, 10, 11, 3]])
    torch.testing.assert_close(plugin.infer([2, 10, 11, 3]), theirs[0], **TOL)


def test_concurrent_embed_calls_from_threads(checkpoint):
    """Services run embed in worker threads: the model keeps no shared scratch buffers, so calls may overlap."""
    from concurrent.futures import ThreadPoolExecutor

    plugin = checkpoint[2]
    expected = plugin.embed(SENTENCES)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: plugin.embed(SENTENCES), range(8)))
    for vectors in results:
        torch.testing.assert_close(vectors, expected, rtol=1e-6, atol=1e-6)
