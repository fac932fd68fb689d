"""The generation loop through the public API on a tiny random Llama (tests/llama/checkpoints.py)."""

from __future__ import annotations

import pytest
import torch

import inference_pio
from inference_pio.engine.generate import greedy

from tests.llama.checkpoints import hf_model, write_checkpoint


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = write_checkpoint(tmp_path_factory.mktemp("tiny"), hf_model())
    m = inference_pio.load(folder, dtype="float32", max_batch_size=4, max_seq_len=256, prefill_budget=32)
    yield m
    m.close()


PROMPTS = [list(range(3, 50)), [7, 8, 9], list(range(100, 120)), list(range(200, 270))]


def test_batched_greedy_equals_one_by_one(model):
    # prefill_budget=32 packs several prompts per step and chunks the 47- and 70-token ones.
    batched = model.generate(PROMPTS, max_tokens=24, temperature=0, ignore_eos=True)
    for prompt, result in zip(PROMPTS, batched):
        [alone] = model.generate([prompt], max_tokens=24, temperature=0, ignore_eos=True)
        assert alone.token_ids == result.token_ids
        assert result.usage.prompt_tokens == len(prompt) and result.usage.completion_tokens == 24


def test_chunked_prefill_matches_single_step_prefill(model):
    plugin = model.plugin
    engine = plugin.engine
    [chunked] = engine.generate([PROMPTS[3]], greedy(8, ignore_eos=True))
    engine.prefill_budget = 512
    try:
        [whole] = engine.generate([PROMPTS[3]], greedy(8, ignore_eos=True))
    finally:
        engine.prefill_budget = 32
    assert chunked.output_token_ids == whole.output_token_ids


def test_seeded_sampling_is_reproducible_and_seed_dependent(model):
    kw = dict(max_tokens=16, temperature=1.0, top_p=0.9, ignore_eos=True)
    a = model.generate(PROMPTS[:2], seed=123, **kw)
    b = model.generate(PROMPTS[:2], seed=123, **kw)
    c = model.generate(PROMPTS[:2], seed=124, **kw)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    assert [r.token_ids for r in a] != [r.token_ids for r in c]


def test_stream_pieces_join_to_generate_text(model):
    kw = dict(max_tokens=20, temperature=0, ignore_eos=True)
    pieces = list(model.stream("Hello world", **kw))
    [result] = model.generate("Hello world", **kw)
    assert "".join(pieces) == result.text
    assert result.text == model.detokenize(result.token_ids)


def test_eos_stops_with_reason_stop(model):
    # Make the first greedy token the EOS id: the request ends at once with "stop".
    [first] = model.generate([PROMPTS[1]], max_tokens=1, temperature=0)
    eos = first.token_ids[0]
    [r] = model.generate([PROMPTS[1]], max_tokens=10, temperature=0, stop_token_ids=[eos])
    assert r.finish_reason == "stop" and r.token_ids == [eos]
    assert model.plugin.kv_cache.usage().used_blocks == 0


def test_tokenize_roundtrip(model):
    ids = model.tokenize("The quick brown fox")
    assert model.detokenize(ids) == "The quick brown fox"


def test_logits_processor_forces_tokens_through_the_engine(model):
    """The engine hands each processor the request's output so far: here it forces a fixed script."""
    script = [5, 9, 11, 3, 17]
    calls = []

    def force_script(output_ids, row):
        calls.append(len(output_ids))
        row.fill_(float("-inf"))
        row[script[len(output_ids)]] = 0.0

    params_forced = greedy(5, ignore_eos=True, logits_processors=(force_script,))
    seqs = model.engine.generate([[1, 2, 3], [4, 5, 6, 7]], [params_forced, greedy(5, ignore_eos=True)])
    assert seqs[0].output_token_ids == script
    assert calls == [0, 1, 2, 3, 4]
    alone = model.engine.generate([[4, 5, 6, 7]], greedy(5, ignore_eos=True))[0]
    assert seqs[1].output_token_ids == alone.output_token_ids
