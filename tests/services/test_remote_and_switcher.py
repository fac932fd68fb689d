"""The OpenAI-compatible remote service and the ModelSwitcher against a real HTTP server on loopback, with
faults injected (HTTP 500, refused connections, hanging and slow answers)."""

from __future__ import annotations

import asyncio
import logging
from typing import Dict

import pytest

from inference_pio.services import (AllModelsFailedError, ModelSwitcher, OpenAIRemoteService, OutputValidationError,
                                    RemoteServiceError, UnknownModelError)
from tests.services.conftest import MODEL_ID, Capital
from tests.services.fault_server import FaultServer, free_port

ANSWER = {"country": "France", "city": "Paris", "confidence": "high"}


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def server():
    server = FaultServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def reset(server):
    server.mode, server.answer = "ok", dict(ANSWER)
    server.faults.clear()


def remote(server, model_id="openai/fake", **options) -> OpenAIRemoteService:
    return OpenAIRemoteService(model_id, **{"base_url": server.url, "api_key": "k", "max_retries": 0, "timeout": 30,
                                            **options})


def generate(service, schema=Capital, prompt="Capital of France?"):
    async def main():
        return await (await service.get_schematic_generator(schema)).generate(prompt)

    return run(main())


# ----- the remote service -----

def test_remote_structured_output(server):
    result = generate(remote(server))
    assert result.content == Capital(**ANSWER)
    assert result.info.model == "openai/fake" and result.info.schema_name == "Capital"
    assert (result.info.usage.input_tokens, result.info.usage.output_tokens) == (7, 5)
    sent = server.last_request
    assert sent["model"] == "fake" and sent["temperature"] == 0
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == Capital.model_json_schema()
    assert sent["messages"][-1] == {"role": "user", "content": "Capital of France?"}


def test_remote_free_json_asks_for_a_json_object(server):
    server.answer = {"anything": [1, 2]}
    assert generate(remote(server), Dict).content == {"anything": [1, 2]}
    assert server.last_request["response_format"] == {"type": "json_object"}


def test_remote_answer_that_does_not_validate(server):
    server.answer = {"country": "France"}
    with pytest.raises(OutputValidationError, match="city"):
        generate(remote(server))


@pytest.mark.parametrize("fault, message", [("500", "HTTP 500"), ("hang", "timed out")])
def test_remote_faults_are_clear_errors(server, fault, message):
    server.mode = fault
    with pytest.raises(RemoteServiceError, match=message):
        generate(remote(server, timeout=0.5))


def test_remote_connection_refused():
    service = OpenAIRemoteService("openai/fake", base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="k",
                                  max_retries=0)
    with pytest.raises(RemoteServiceError, match="cannot reach"):
        generate(service)


def test_remote_embeddings_in_input_order(server):
    async def main():
        embedder = await remote(server, embedding_model="emb").get_embedder()
        return embedder, await embedder.embed(["a", "bbb", "cc"])

    embedder, result = run(main())
    assert [v[0] for v in result.vectors] == [1.0, 3.0, 2.0] and embedder.dimensions == 3


def test_remote_configuration_errors():
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIRemoteService("openai/gpt-4o", env={})
    with pytest.raises(ValueError, match="<provider>/<model>"):
        OpenAIRemoteService("gpt-4o", api_key="k")
    service = OpenAIRemoteService("openai/gpt-4o", env={"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://h:1/v1"})
    assert str(service.client.base_url).startswith("http://h:1/v1") and service.model_name == "gpt-4o"


# ----- the switcher -----

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def switcher_over(server, manager, service, fallback=MODEL_ID, default="openai/fake", **options) -> ModelSwitcher:
    services = {MODEL_ID: service, "openai/fake": remote(server)}
    switcher = ModelSwitcher(logging.getLogger("test"), manager, default, fallback, services=services, **options)
    run(switcher.initialize())
    return switcher


@pytest.mark.parametrize("fault", ["500", "refused"])
def test_fallback_answers_when_the_default_fails(server, manager, service, fault):
    switcher = switcher_over(server, manager, service)
    if fault == "refused":
        switcher._services["openai/fake"] = OpenAIRemoteService(
            "openai/fake", base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="k", max_retries=0)
    server.mode = "500"
    result = generate(switcher)
    assert isinstance(result.content, Capital) and result.info.model == MODEL_ID
    figures = switcher.figures()
    assert figures["openai/fake"].errors == 1 and figures["openai/fake"].successes == 0
    assert figures[MODEL_ID].successes == 1 and figures[MODEL_ID].tokens_per_second > 0
    assert ("HTTP 500" if fault == "500" else "cannot reach") in figures["openai/fake"].last_error


def test_timeout_falls_back_and_counts(server, manager):
    """A hanging default is abandoned after the switcher's timeout; the fallback (the same server) answers."""
    services = {"openai/a": remote(server, "openai/a"), "openai/b": remote(server, "openai/b")}
    switcher = ModelSwitcher(None, manager, "openai/a", "openai/b", services=services, timeout=0.5)
    run(switcher.initialize())
    server.faults.extend(["hang"])
    result = generate(switcher)
    assert result.info.model == "openai/b" and result.content.city == "Paris"
    a = switcher.figures()["openai/a"]
    assert (a.errors, a.timeouts) == (1, 1) and "0.5 s" in a.last_error


def test_slow_answers_within_the_timeout_stay_with_the_default(server, manager, service):
    switcher = switcher_over(server, manager, service, timeout=30)
    server.mode, server.slow_seconds = "slow", 0.2
    results = [generate(switcher) for _ in range(3)]
    assert {r.info.model for r in results} == {"openai/fake"}
    figures = switcher.figures()["openai/fake"]
    assert figures.successes == 3 and figures.errors == 0
    assert 0.2 <= figures.latency_p50 <= figures.latency_p95
    local = switcher.figures()[MODEL_ID]
    assert (local.requests, local.latency_p95, local.tokens_per_second) == (0, None, None), local


def test_every_concurrent_request_gets_an_answer(server, manager, service):
    switcher = switcher_over(server, manager, service)
    server.faults.extend(["500", "ok", "500", "500", "ok", "500"])

    async def main():
        generator = await switcher.get_schematic_generator(Capital)
        return await asyncio.gather(*(generator.generate(f"question {i}") for i in range(6)))

    results = run(main())
    assert all(isinstance(r.content, Capital) for r in results)
    answered_by = [r.info.model for r in results]
    figures = switcher.figures()
    assert figures["openai/fake"].errors == 4 and figures["openai/fake"].successes == answered_by.count("openai/fake")
    assert figures[MODEL_ID].successes == answered_by.count(MODEL_ID) == 4


def test_circuit_breaker_skips_then_retries(server, manager, service):
    clock = FakeClock()
    switcher = switcher_over(server, manager, service, failure_threshold=3, cooldown=60, clock=clock)
    server.mode = "500"
    for _ in range(3):
        assert generate(switcher).info.model == MODEL_ID
    assert switcher.figures()["openai/fake"].circuit_open
    hits = server.chat_requests
    server.mode = "ok"
    assert generate(switcher).info.model == MODEL_ID  # skipped while open: the server sees nothing
    assert server.chat_requests == hits
    clock.now += 61  # cool-down over: one trial goes to the default, succeeds, and closes the breaker
    assert generate(switcher).info.model == "openai/fake"
    figures = switcher.figures()["openai/fake"]
    assert not figures.circuit_open and figures.consecutive_failures == 0
    assert (figures.requests, figures.errors, figures.successes) == (4, 3, 1)


def test_failed_half_open_trial_reopens_at_once(server, manager, service):
    clock = FakeClock()
    switcher = switcher_over(server, manager, service, failure_threshold=2, cooldown=10, clock=clock)
    server.mode = "500"
    generate(switcher), generate(switcher)
    clock.now += 11
    generate(switcher)  # the trial fails: open again without waiting for two more failures
    hits = server.chat_requests
    generate(switcher)
    assert server.chat_requests == hits and switcher.figures()["openai/fake"].errors == 3


def test_all_models_failing_is_one_clear_error(server, manager, service):
    services = {"openai/fake": remote(server), "openai/down": OpenAIRemoteService(
        "openai/down", base_url=f"http://127.0.0.1:{free_port()}/v1", api_key="k", max_retries=0)}
    switcher = ModelSwitcher(None, manager, "openai/fake", "openai/down", services=services)
    run(switcher.initialize())
    server.mode = "500"
    with pytest.raises(AllModelsFailedError, match="openai/fake.*HTTP 500.*openai/down.*cannot reach") as e:
        generate(switcher)
    assert set(e.value.errors) == {"openai/fake", "openai/down"}


def test_seed_usage_set_model_list_and_choose(server, manager, service):
    switcher = switcher_over(server, manager, service)
    assert switcher.model_id == "openai/fake"
    assert switcher.list_available_models() == [MODEL_ID, "openai/fake"]
    switcher.set_model(MODEL_ID)
    assert generate(switcher, Dict).info.model == MODEL_ID
    with pytest.raises(UnknownModelError, match="local/llama/nope"):
        switcher.set_model("local/llama/nope")
    with pytest.raises(ValueError, match="<provider>/<model>"):
        switcher.set_model("nonsense")
    size = manager.get_model(MODEL_ID).size_bytes
    switcher.set_model("openai/fake")
    assert switcher.choose_model(("generation",), memory_budget_bytes=size) == MODEL_ID == switcher.model_id
    with pytest.raises(UnknownModelError, match="within"):
        switcher.choose_model(("generation",), memory_budget_bytes=size - 1)
    with pytest.raises(UnknownModelError, match="vision"):
        switcher.choose_model(("generation", "vision"))


def test_embeddings_stay_with_the_model_that_answered_first(server, manager, service):
    switcher = switcher_over(server, manager, service, remote_options={})
    switcher._services["openai/fake"] = remote(server, embedding_model="emb")
    server.mode = "500"  # chat fails, embeddings still answer: the default embeds

    async def main():
        embedder = await switcher.get_embedder()
        first = await embedder.embed(["ab"])
        return embedder, first

    embedder, first = run(main())
    assert first.vectors[0][0] == 2.0 and embedder.id == "openai/emb" and embedder.dimensions == 3


def test_moderation_through_the_switcher(server, manager, service):
    switcher = switcher_over(server, manager, service)
    server.answer = {"flagged": False, "categories": ["hate"]}

    async def main():
        return await (await switcher.get_moderation_service()).moderate("some text")

    check = run(main())
    assert not check.flagged and check.tags == []  # categories count only when the model flags
    server.answer = {"flagged": True, "categories": ["hate"]}
    check = run(main())
    assert check.flagged and check.tags == ["hate"]
    assert server.last_request["response_format"]["json_schema"]["schema"]["properties"]["categories"]["items"][
        "enum"] == ["jailbreak", "harassment", "hate", "illicit", "self-harm", "sexual", "violence"]
