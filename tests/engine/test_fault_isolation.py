"""A fault of one request (its logits processor, its sink) ends that request alone: the requests batched
with it in the same steps finish exactly as they would alone."""

from __future__ import annotations

import asyncio

import pytest

import inference_pio
from inference_pio.engine.async_engine import AsyncEngine
from inference_pio.engine.generate import GenerationEngine, greedy
from inference_pio.engine.kv_cache import PagedKVCache

from tests.llama.checkpoints import hf_model, write_checkpoint

PROMPT = [5, 17, 42, 99, 7, 12]
OTHER = [8, 3, 77, 120, 31]


class Boom(RuntimeError):
    pass


def raises_after(n: int):
    """A logits processor that raises once the request has ``n`` output tokens."""
    def processor(output_ids, logits):
        if len(output_ids) >= n:
            raise Boom(f"processor fault after {n} tokens")
    return processor


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = inference_pio.load(write_checkpoint(tmp_path_factory.mktemp("faults"), hf_model()), dtype="float32",
                           max_seq_len=128)
    yield m
    m.close()


def fresh_engine(model) -> GenerationEngine:
    src = model.plugin.kv_cache
    cache = PagedKVCache(len(src.key_caches), src.key_caches[0].shape[2], src.key_caches[0].shape[3], 32, 16,
                         src.key_caches[0].dtype, src.device)
    return GenerationEngine(model.plugin.model, cache, max_model_len=128, tokenizer=model.plugin.tokenizer)


def alone(model, prompt, n) -> list[int]:
    return fresh_engine(model).generate([prompt], greedy(n, ignore_eos=True))[0].output_token_ids


@pytest.mark.parametrize("fault_after", [0, 3])
def test_processor_fault_ends_only_its_request(model, fault_after):
    engine = fresh_engine(model)
    events: dict[str, list] = {"innocent": [], "faulty": [], "other": []}
    requests = [engine.new_request(PROMPT, greedy(12, ignore_eos=True), request_id="innocent",
                                   sink=events["innocent"].append),
                engine.new_request(PROMPT, greedy(12, ignore_eos=True, logits_processors=(raises_after(fault_after),)),
                                   request_id="faulty", sink=events["faulty"].append),
                engine.new_request(OTHER, greedy(12, ignore_eos=True), request_id="other", sink=events["other"].append)]
    for r in requests:
        engine.submit(r)
    for _ in range(100):
        if all(r.done for r in requests):
            break
        with engine.lock:
            engine.step()
    innocent, faulty, other = requests
    assert isinstance(faulty.error, Boom) and isinstance(events["faulty"][-1], Boom)
    assert len(events["faulty"]) == fault_after + 1  # its tokens before the fault, then the error
    assert innocent.error is None and other.error is None
    assert innocent.seq.output_token_ids == alone(model, PROMPT, 12)
    assert other.seq.output_token_ids == alone(model, OTHER, 12)
    assert events["innocent"][-1].finish_reason == "length" and len(events["innocent"]) == 12
    assert engine.stats()["kv_blocks_used"] == 0 and engine.stats()["running"] == 0


def test_a_sink_that_raises_ends_only_its_request(model):
    engine = fresh_engine(model)
    got = []

    def bad_sink(item):
        raise RuntimeError("the client's queue is gone")

    good = engine.new_request(PROMPT, greedy(8, ignore_eos=True), sink=got.append)
    bad = engine.new_request(OTHER, greedy(8, ignore_eos=True), sink=bad_sink)
    engine.submit(good), engine.submit(bad)
    for _ in range(50):
        if good.done and bad.done:
            break
        with engine.lock:
            engine.step()
    assert isinstance(bad.error, RuntimeError) and good.error is None
    assert [t for out in got for t in out.token_ids] == alone(model, PROMPT, 8)


def test_async_stream_survives_a_faulty_neighbour(model):
    """The issue's case: an innocent stream gets every token and its finish while a neighbour's processor raises."""
    engine = AsyncEngine(fresh_engine(model))

    async def stream(params):
        tokens, finish = [], None
        async for out in engine.generate(PROMPT, params):
            tokens += out.token_ids
            finish = out.finish_reason
        return tokens, finish

    async def main():
        return await asyncio.gather(stream(greedy(40, ignore_eos=True)),
                                    *(stream(greedy(40, ignore_eos=True, logits_processors=(raises_after(i),)))
                                      for i in (0, 5, 20)), return_exceptions=True)

    try:
        innocent, *faulty = asyncio.run(main())
    finally:
        engine.shutdown()
    assert innocent == (alone(model, PROMPT, 40), "length")
    assert all(isinstance(f, Boom) for f in faulty), faulty
