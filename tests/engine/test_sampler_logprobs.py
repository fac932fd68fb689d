"""Sampler.sample's logprobs: log_softmax of the logits after processors and repetition penalty, per row."""

from __future__ import annotations

import pytest
import torch

from inference_pio.engine.sampler import Sampler, SamplingParams


def _ban_token(token: int):
    def processor(output_ids, logits):
        logits[token] = float("-inf")
    return processor


def test_logprobs_per_row_in_a_mixed_batch():
    torch.manual_seed(0)
    vocab = 37
    logits = torch.randn(4, vocab) * 3
    seen = torch.tensor([1, 2, 2, 5])
    params = [
        SamplingParams(temperature=0, logprobs=5),  # greedy
        SamplingParams(temperature=0.7, top_k=4, seed=3, logprobs=0, repetition_penalty=1.5),  # sampled, penalised
        SamplingParams(temperature=1.0, seed=4),  # no logprobs
        SamplingParams(temperature=0, logprobs=3, logits_processors=(_ban_token(int(logits[3].argmax())),)),
    ]
    # What each row's distribution must be: the penalty and the processor applied, temperature and top-k not.
    expected = logits.double().clone()
    row = expected[1]
    row[seen] = torch.where(row[seen] < 0, row[seen] * 1.5, row[seen] / 1.5)
    expected[3, int(logits[3].argmax())] = float("-inf")
    expected = expected.log_softmax(dim=-1)

    ids, logprobs = Sampler().sample(logits.clone(), params, [None, seen, None, None],
                                     [None, torch.Generator().manual_seed(3), torch.Generator().manual_seed(4), None],
                                     [[], [], [], []])
    assert logprobs[2] is None
    for r, k in ((0, 5), (1, 0), (3, 3)):
        entry = logprobs[r]
        assert entry.token_id == int(ids[r])
        assert entry.logprob == pytest.approx(expected[r, entry.token_id].item(), abs=1e-5)
        assert len(entry.top) == k
        best = expected[r].topk(k)
        assert [t for t, _ in entry.top] == best.indices.tolist()
        assert [lp for _, lp in entry.top] == pytest.approx(best.values.tolist(), abs=1e-5)
    assert logprobs[0].top[0] == (int(ids[0]), logprobs[0].logprob)  # greedy: the chosen token leads
    # A token the processor forbids reports the floor, never -inf (JSON has none).
    small = torch.randn(1, 5)
    banned = int(small.argmax())
    full = Sampler().sample(small, [SamplingParams(temperature=0, logprobs=5, logits_processors=(_ban_token(banned),))],
                            None, None, [[]])[1][0]
    assert full.top[-1] == (banned, -9999.0) and full.token_id != banned

def test_logprobs_out_of_range_are_refused():
    for bad in (-1, 21, 1.5, True):
        with pytest.raises(ValueError, match="logprobs"):
            SamplingParams(logprobs=bad)
