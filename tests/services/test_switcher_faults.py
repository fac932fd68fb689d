"""The switcher answers from the fallback whatever the primary does wrong: raise, hang in a coroutine, hang
in worker threads, block its event loop, answer garbage, or not be installed. 50 concurrent requests per
fault mode, each answered by the fallback within the timeout plus a bounded margin."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

from inference_pio.services import AllModelsFailedError, ModelSwitcher
from inference_pio.services.interface import (GenerationInfo, NLPService, SchematicGenerationResult,
                                              SchematicGenerator, UsageInfo)
from inference_pio.services.openai_remote import CharacterEstimatingTokenizer

from tests.services.conftest import Capital

TIMEOUT = 0.5  # small, yet roomy enough for the fallback on a loaded machine
MARGIN = 3.0  # scheduling on a loaded 2-core machine; a hang would take forever
REQUESTS = 50
PRIMARY, FALLBACK = "openai/primary", "openai/fallback"
PARIS = Capital(country="France", city="Paris", confidence="high")


def result(content, model: str, output_tokens: int = 3) -> SchematicGenerationResult:
    return SchematicGenerationResult(content, GenerationInfo("Capital", model, 0.01, UsageInfo(5, output_tokens)))


GARBAGE = [None, "Paris", {"city": "Paris"}, result({"country": "France"}, PRIMARY), result(PARIS, PRIMARY, -1),
           result(None, PRIMARY)]


class FakeService(NLPService):
    """Answers Capital questions the way ``mode`` says; ``release`` ends every hang (at teardown)."""

    def __init__(self, model_id: str, mode: str, release: threading.Event):
        self._model_id, self.mode, self.release = model_id, mode, release
        self.calls = 0
        self._garbage = itertools.cycle(GARBAGE)

    @property
    def model_id(self) -> str:
        return self._model_id

    async def get_schematic_generator(self, schema: Any, hints: Mapping[str, Any] | None = None):
        return FakeGenerator(self, schema)

    async def get_embedder(self, hints=None):
        raise NotImplementedError

    async def get_moderation_service(self):
        raise NotImplementedError

    async def get_tokenizer(self):
        return CharacterEstimatingTokenizer()

    async def answer(self) -> SchematicGenerationResult:
        self.calls += 1
        if self.mode == "ok":
            await asyncio.to_thread(sum, range(100))  # thread work, as a local model's tokenizer or grammar
            return result(PARIS, self.model_id)
        if self.mode == "raises":
            raise RuntimeError("the model crashed")
        if self.mode == "async hang":
            await asyncio.Event().wait()
        if self.mode == "thread hang":
            await asyncio.to_thread(self.release.wait)
        if self.mode == "event-loop block":
            self.release.wait()  # blocks the event loop the call runs on
        if self.mode == "garbage":
            return next(self._garbage)
        raise AssertionError(f"the {self.mode} model answered")


class FakeGenerator(SchematicGenerator):
    def __init__(self, service: FakeService, schema):
        self.service, self.schema = service, schema

    @property
    def id(self) -> str:
        return self.service.model_id

    @property
    def max_tokens(self) -> int:
        return 64

    @property
    def tokenizer(self):
        return CharacterEstimatingTokenizer()

    async def generate(self, prompt: str, hints=None) -> SchematicGenerationResult:
        return await self.service.answer()


@pytest.fixture
def release():
    event = threading.Event()
    yield event
    event.set()  # ends the hung threads and unblocks the blocked loops


def switcher_with(primary: str, mode: str, release, manager=None, **options) -> ModelSwitcher:
    services = {PRIMARY: FakeService(PRIMARY, mode, release), FALLBACK: FakeService(FALLBACK, "ok", release)}
    return ModelSwitcher(logging.getLogger("test"), manager, primary, FALLBACK, services=services, timeout=TIMEOUT,
                         **options)


async def fifty(switcher: ModelSwitcher) -> list[tuple[str, float]]:
    generator = await switcher.get_schematic_generator(Capital)

    async def one(i):
        started = time.perf_counter()
        answer = await generator.generate(f"question {i}")
        assert answer.content == PARIS
        return answer.info.model, time.perf_counter() - started

    return await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(REQUESTS))), 30)


@pytest.mark.parametrize("mode", ["raises", "async hang", "thread hang", "event-loop block", "garbage"])
def test_fifty_requests_all_answered_by_the_fallback(mode, release):
    switcher = switcher_with(PRIMARY, mode, release)

    async def main():
        await switcher.initialize()
        try:
            answers = await fifty(switcher)
            again = await fifty(switcher)  # the breaker is open now: the primary is skipped
            return answers, again
        finally:
            release.set()
            await switcher.aclose()

    answers, again = asyncio.run(main())
    assert [model for model, _ in answers + again] == [FALLBACK] * (2 * REQUESTS)
    assert max(seconds for _, seconds in answers + again) <= TIMEOUT + MARGIN
    primary = switcher.figures()[PRIMARY]
    assert primary.circuit_open and primary.successes == 0 and primary.errors == primary.requests <= REQUESTS
    assert primary.timeouts == (primary.errors if "hang" in mode or "block" in mode else 0)
    assert switcher.figures()[FALLBACK].successes == 2 * REQUESTS


def test_a_default_that_is_not_installed_falls_back_with_a_warning(manager, release, caplog):
    switcher = switcher_with("local/llama/not-installed", "ok", release, manager)

    async def main():
        with caplog.at_level(logging.WARNING, logger="test"):
            await switcher.initialize()
        try:
            return await fifty(switcher)
        finally:
            await switcher.aclose()

    answers = asyncio.run(main())
    assert [model for model, _ in answers] == [FALLBACK] * REQUESTS
    assert switcher.model_id == FALLBACK and "local/llama/not-installed" in caplog.text


def test_an_open_circuit_is_not_tried_when_the_fallback_fails(release):
    switcher = switcher_with(PRIMARY, "raises", release, failure_threshold=2, cooldown=600)

    async def main():
        await switcher.initialize()
        generator = await switcher.get_schematic_generator(Capital)
        try:
            for _ in range(2):
                await generator.generate("q")  # the fallback answers; the primary's breaker opens
            switcher._services[FALLBACK].mode = "raises"
            with pytest.raises(AllModelsFailedError) as e:
                await generator.generate("q")
            return e.value
        finally:
            await switcher.aclose()

    error = asyncio.run(main())
    assert switcher._services[PRIMARY].calls == 2  # skipped the third time, not tried after the fallback failed
    assert "circuit is open" in str(error.errors[PRIMARY]) and "crashed" in str(error.errors[FALLBACK])


def test_when_every_circuit_is_open_they_are_still_tried(release):
    switcher = switcher_with(PRIMARY, "raises", release, failure_threshold=1, cooldown=600)

    async def main():
        await switcher.initialize()
        generator = await switcher.get_schematic_generator(Capital)
        switcher._services[FALLBACK].mode = "raises"
        try:
            with pytest.raises(AllModelsFailedError):
                await generator.generate("q")  # both breakers open
            switcher._services[FALLBACK].mode = "ok"
            return await generator.generate("q")
        finally:
            await switcher.aclose()

    assert asyncio.run(main()).info.model == FALLBACK


def test_a_cancelled_half_open_trial_is_given_back(release):
    clock = [1000.0]
    switcher = switcher_with(PRIMARY, "raises", release, failure_threshold=1, cooldown=10, clock=lambda: clock[0])

    async def main():
        await switcher.initialize()
        generator = await switcher.get_schematic_generator(Capital)
        try:
            await generator.generate("q")  # the primary fails: its breaker opens
            clock[0] += 11  # cool-down over: the next request claims the trial ...
            switcher._services[PRIMARY].mode = "async hang"
            task = asyncio.ensure_future(generator.generate("q"))
            await asyncio.sleep(TIMEOUT / 4)
            task.cancel()  # ... and its caller gives up
            await asyncio.gather(task, return_exceptions=True)
            switcher._services[PRIMARY].mode = "ok"
            return await generator.generate("q")
        finally:
            await switcher.aclose()

    assert asyncio.run(main()).info.model == PRIMARY  # the trial was free again
