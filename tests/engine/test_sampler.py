"""Sampler: greedy, filters against transformers' processors, sampling support, seeds, penalties."""

from __future__ import annotations

import math

import pytest
import torch

from inference_pio.engine import Sampler, SamplingParams, apply_repetition_penalty, filter_logits

hf = pytest.importorskip("transformers.generation.logits_process")

VOCAB = 64


def logits_from_probs(probs) -> torch.Tensor:
    return torch.tensor([[math.log(p) for p in probs]], dtype=torch.float32)


def kept(logits: torch.Tensor) -> list[set[int]]:
    return [set(torch.nonzero(torch.isfinite(row)).flatten().tolist()) for row in logits]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"temperature": -0.1}, "temperature"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.2}, "top_p"),
        ({"min_p": 1.0}, "min_p"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"seed": "7"}, "seed"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["ok", ""]}, "stop"),
        ({"stop_token_ids": [-3]}, "stop_token_ids"),
    ],
)
def test_params_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


def test_params_normalize_stop():
    p = SamplingParams(stop="###", stop_token_ids=[5, 6], top_k=0)
    assert p.stop == ("###",) and p.stop_token_ids == (5, 6) and p.top_k_or_off == 0
    assert SamplingParams(temperature=0).is_greedy and not p.is_greedy


def test_greedy_is_argmax():
    torch.manual_seed(0)
    logits = torch.randn(7, VOCAB)
    out = Sampler()(logits.clone(), [SamplingParams(temperature=0, top_k=3, top_p=0.5)] * 7)
    assert out.dtype == torch.int64 and torch.equal(out, logits.argmax(-1))


def test_mixed_batch_keeps_greedy_rows_exact():
    torch.manual_seed(1)
    logits = torch.randn(5, VOCAB)
    params = [SamplingParams(temperature=0), SamplingParams(top_k=1), SamplingParams(temperature=0),
              SamplingParams(temperature=2.0, top_k=4), SamplingParams(temperature=0)]
    out = Sampler()(logits.clone(), params)
    argmax = logits.argmax(-1)
    assert out[[0, 2, 4]].tolist() == argmax[[0, 2, 4]].tolist()
    assert out[1] == argmax[1]  # top_k=1 leaves only the argmax
    assert out[3].item() in set(logits[3].topk(4).indices.tolist())


def test_filters_keep_exactly_the_expected_sets():
    probs = [0.5, 0.3, 0.15, 0.05]
    cases = [
        (dict(top_k=torch.tensor([2])), {0, 1}),
        (dict(top_p=torch.tensor([0.75])), {0, 1}),
        (dict(top_p=torch.tensor([0.85])), {0, 1, 2}),
        (dict(top_p=torch.tensor([1.0])), {0, 1, 2, 3}),
        (dict(min_p=torch.tensor([0.2])), {0, 1, 2}),   # threshold 0.1
        (dict(min_p=torch.tensor([0.5])), {0, 1}),      # threshold 0.25
        # top-p sees the top-k survivors renormalized (.526 .316 .158): mass above token 2 is .842, not .8
        (dict(top_k=torch.tensor([3]), top_p=torch.tensor([0.83])), {0, 1}),
    ]
    for kwargs, expected in cases:
        assert kept(filter_logits(logits_from_probs(probs), **kwargs)) == [expected], kwargs


def test_top_k_keeps_ties_like_transformers():
    logits = torch.tensor([[5.0, 1.0, 5.0, 5.0, 0.0]])
    assert kept(filter_logits(logits, top_k=torch.tensor([2]))) == [{0, 2, 3}]


def test_per_row_filters_match_transformers_warpers():
    torch.manual_seed(2)
    rows = [
        dict(temperature=0.7, top_k=5, top_p=1.0, min_p=0.0),
        dict(temperature=1.3, top_k=0, top_p=0.8, min_p=0.0),
        dict(temperature=1.0, top_k=20, top_p=0.9, min_p=0.05),
        dict(temperature=0.5, top_k=0, top_p=1.0, min_p=0.1),
    ]
    logits = torch.randn(len(rows), VOCAB) * 3
    ours = filter_logits(
        logits.clone(),
        temperatures=torch.tensor([r["temperature"] for r in rows]),
        top_k=torch.tensor([r["top_k"] for r in rows]),
        top_p=torch.tensor([r["top_p"] for r in rows]),
        min_p=torch.tensor([r["min_p"] for r in rows]),
    )
    for i, r in enumerate(rows):
        ref = logits[i : i + 1] / r["temperature"]
        if r["top_k"]:
            ref = hf.TopKLogitsWarper(r["top_k"])(None, ref)
        if r["top_p"] < 1:
            ref = hf.TopPLogitsWarper(r["top_p"])(None, ref)
        if r["min_p"]:
            ref = hf.MinPLogitsWarper(r["min_p"])(None, ref)
        assert kept(ours[i : i + 1]) == kept(ref), r
        finite = torch.isfinite(ref)
        torch.testing.assert_close(ours[i : i + 1][finite], ref[finite])


def test_top_k_alone_per_row_matches_transformers():
    torch.manual_seed(5)
    logits = torch.randn(3, VOCAB)
    ours = filter_logits(logits.clone(), top_k=torch.tensor([0, 3, VOCAB + 10]))  # off, 3, more than the vocab
    assert kept(ours[0:1]) == kept(ours[2:3]) == [set(range(VOCAB))]
    assert kept(ours[1:2]) == kept(hf.TopKLogitsWarper(3)(None, logits[1:2].clone()))


def test_sampling_support_and_frequencies():
    probs = torch.tensor([0.05, 0.4, 0.0, 0.3, 0.2, 0.05])
    n = 20000
    logits = torch.log(probs).expand(n, -1).contiguous()
    torch.manual_seed(3)
    out = Sampler()(logits, [SamplingParams(top_k=3)] * n)
    counts = torch.bincount(out, minlength=6).float() / n
    assert set(out.unique().tolist()) == {1, 3, 4}
    expected = torch.tensor([0, 0.4, 0, 0.3, 0.2, 0]) / 0.9
    assert (counts - expected).abs().max() < 0.02  # ~5 standard deviations at n = 20000


def test_seeded_rows_do_not_depend_on_the_batch():
    steps = [torch.randn(6, VOCAB, generator=torch.Generator().manual_seed(s)) for s in range(6)]
    target = SamplingParams(temperature=0.9, top_p=0.95, seed=1234)
    others = [SamplingParams(temperature=1.0, seed=99), SamplingParams(temperature=0), SamplingParams(top_k=7)]

    def run(position: int, batch_params) -> list[int]:
        gens = [torch.Generator().manual_seed(p.seed) if p.seed is not None else None for p in batch_params]
        tokens = []
        for logits in steps:
            batch = logits[: len(batch_params)].clone()
            batch[position] = logits[5]  # the target row sees the same logits in every composition
            tokens.append(Sampler()(batch, batch_params, generators=gens)[position].item())
        return tokens

    alone = run(0, [target])
    assert run(2, others[:2] + [target] + others[2:]) == alone
    assert run(1, [others[2], target]) == alone
    torch.manual_seed(0)  # the global generator must not matter to a seeded row
    assert run(3, others + [target]) == alone
    other_seed = run(0, [SamplingParams(temperature=0.9, top_p=0.95, seed=4321)])
    assert other_seed != alone


def test_repetition_penalty_matches_transformers():
    torch.manual_seed(4)
    logits = torch.randn(3, VOCAB) * 4
    seen = [torch.randint(0, VOCAB, (n,)) for n in (10, 1, 25)]  # with repeats
    for penalty in (1.3, 0.7):
        ours = apply_repetition_penalty(logits.clone(), seen, [penalty] * 3)
        for i in range(3):
            ref = hf.RepetitionPenaltyLogitsProcessor(penalty)(seen[i][None], logits[i : i + 1].clone())
            assert torch.equal(ours[i], ref[0])


def test_sampler_applies_penalty_before_greedy():
    logits = torch.tensor([[3.0, 2.0, -1.0]])
    seen = [torch.tensor([0])]
    out = Sampler()(logits, [SamplingParams(temperature=0, repetition_penalty=2.0)], seen_token_ids=seen)
    assert out.tolist() == [1]  # 3/2 = 1.5 < 2


def test_sampler_argument_errors():
    s = Sampler()
    with pytest.raises(ValueError, match="float32"):
        s(torch.zeros(1, 4, dtype=torch.float16), [SamplingParams()])
    with pytest.raises(ValueError, match="params has 2 entries for a batch of 1"):
        s(torch.zeros(1, 4), [SamplingParams()] * 2)
    with pytest.raises(ValueError, match="seen_token_ids is required"):
        s(torch.zeros(1, 4), [SamplingParams(repetition_penalty=1.2)])


def test_logits_processors_edit_rows_before_sampling():
    """A processor sees its own row's output ids and logits; it runs for greedy rows and sampled rows."""
    seen = []

    def only(token):
        def processor(output_ids, row):
            seen.append((token, list(output_ids), row.shape))
            keep = row[token].clone()
            row.fill_(float("-inf"))
            row[token] = keep
        return processor

    logits = torch.randn(3, 11)
    params = [SamplingParams(temperature=0, logits_processors=(only(7),)), SamplingParams(temperature=0),
              SamplingParams(temperature=1.5, top_p=0.9, logits_processors=[only(2)])]
    expected_free_row = int(logits[1].argmax())
    out = Sampler()(logits, params, output_token_ids=[[1, 2], None, []])
    assert out.tolist() == [7, expected_free_row, 2]
    assert seen == [(7, [1, 2], (11,)), (2, [], (11,))]


def test_logits_processors_are_validated():
    with pytest.raises(ValueError, match="logits_processors"):
        SamplingParams(logits_processors=(3,))
    with pytest.raises(ValueError, match="output_token_ids"):
        Sampler()(torch.zeros(1, 4), [SamplingParams(logits_processors=(lambda ids, row: None,))])
