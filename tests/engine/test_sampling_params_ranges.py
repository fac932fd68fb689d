"""SamplingParams accepts exactly what the sampler can use: out-of-range numbers fail at construction,
naming the field, and the extremes it accepts sample without error."""

from __future__ import annotations

import pytest
import torch

from inference_pio.engine.sampler import GREEDY_BELOW, MAX_TOP_K, SEED_RANGE, Sampler, SamplingParams


@pytest.mark.parametrize("field,value", [
    ("top_k", MAX_TOP_K + 1), ("top_k", -1), ("top_k", 2**80),
    ("seed", SEED_RANGE[1] + 1), ("seed", SEED_RANGE[0] - 1), ("seed", 2**80), ("seed", 1.5),
    ("temperature", float("inf")), ("temperature", float("nan")), ("temperature", -0.1),
    ("top_p", float("nan")), ("top_p", 0.0), ("top_p", 1.5),
    ("min_p", float("nan")), ("min_p", 1.0),
    ("repetition_penalty", float("inf")), ("repetition_penalty", float("nan")), ("repetition_penalty", 0.0),
    ("max_tokens", 0), ("max_tokens", 2.0),
])
def test_out_of_range_fails_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_the_extremes_sample():
    logits = torch.randn(4, 300)
    params = [SamplingParams(top_k=MAX_TOP_K, seed=SEED_RANGE[1]), SamplingParams(top_k=MAX_TOP_K, seed=SEED_RANGE[0]),
              SamplingParams(temperature=GREEDY_BELOW / 10, top_p=1e-300), SamplingParams(repetition_penalty=1e30)]
    seen = [None, None, None, torch.tensor([1, 2, 3])]
    gens = [torch.Generator().manual_seed(p.seed) if p.seed is not None else None for p in params]
    ids = Sampler()(logits.clone(), params, seen, gens)
    assert ids.shape == (4,) and bool(((ids >= 0) & (ids < 300)).all())
    assert params[2].is_greedy and int(ids[2]) == int(logits[2].argmax())
