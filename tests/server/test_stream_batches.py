"""Streaming batches what the engine produced while the event loop was busy: one event per choice per wakeup,
whose texts, token counts and logprobs add up to the same answer as one event per token."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

import inference_pio
from inference_pio.engine.generate import RequestOutput
from inference_pio.engine.sampler import SamplingParams, TokenLogprobs
from inference_pio.server import ServedModel, ServerState, create_app
from inference_pio.server.generation import merge_events, stream_choices
from inference_pio.server.sse import ChunkEvents, event

from tests.server.chat_checkpoint import write_chat_checkpoint

MODEL = "tiny"


def lp(token: int) -> TokenLogprobs:
    return TokenLogprobs(token, -0.5 * token, ((token, -0.5 * token),))


def test_merge_joins_each_choice_in_order_of_first_appearance():
    events = [(1, "a", 1, None, [lp(1)]), (0, "x", 1, None, [lp(2)]), (1, "", 1, None, [lp(3)]),
              (1, "bc", 2, "stop", [lp(4), lp(5)]), (0, "y", 1, None, [lp(6)])]
    assert merge_events(events) == [(1, "abc", 4, "stop", [lp(1), lp(3), lp(4), lp(5)]),
                                    (0, "xy", 2, None, [lp(2), lp(6)])]
    assert merge_events([(0, "a", 1, None, None), (0, "b", 1, "length", None)]) == [(0, "ab", 2, "length", None)]


def test_chunk_events_equal_whole_events():
    head = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m\u00e9"}
    chunk = ChunkEvents(head)
    choices = [{"index": 0, "delta": {"content": 'quote " newline \n \u00e9'}, "finish_reason": None}]
    assert chunk(choices) == event({**head, "choices": choices})
    usage = {"usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    assert chunk([], usage) == event({**head, "choices": [], **usage})
    with pytest.raises(ValueError, match="head"):
        ChunkEvents({**head, "choices": []})


class ScriptedEngine:
    """Yields ``tokens`` outputs per request; ``pace`` lets the event loop run between them; ``fail_after``
    raises after that many; ``hang_after`` waits forever after that many (until closed)."""

    def __init__(self, tokens: int, pace: bool = False, fail_after: int | None = None, hang_after: int | None = None):
        self.tokens, self.pace, self.fail_after, self.hang_after = tokens, pace, fail_after, hang_after
        self.closed: list[str] = []

    async def generate(self, prompt_ids, params, request_id=None):
        try:
            for k in range(self.tokens):
                if k == self.fail_after:
                    raise RuntimeError("the engine failed")
                if k == self.hang_after:
                    await asyncio.get_running_loop().create_future()
                if self.pace:
                    await asyncio.sleep(0)
                yield RequestOutput(request_id, [k], f"<{k}>", "length" if k == self.tokens - 1 else None,
                                    [lp(k)] if params.logprobs is not None else None)
        finally:
            self.closed.append(request_id)


def collect(engine, choices: int, logprobs: int | None = None, stop_after: int | None = None):
    served = ServedModel(MODEL, model=None, engine=engine)
    params = [SamplingParams(max_tokens=engine.tokens, logprobs=logprobs)] * choices

    async def main():
        batches = []
        stream = stream_choices(served, [1, 2, 3], params)
        async for batch in stream:
            batches.append(batch)
            if stop_after is not None and len(batches) == stop_after:
                await stream.aclose()
                break
        return batches
    return asyncio.run(main())


def joined(batches) -> dict[int, tuple[str, int, list]]:
    out: dict[int, tuple[str, int, list]] = {}
    for batch in batches:
        for index, text, n, finish, logprobs in batch:
            old_text, old_n, old_lp = out.get(index, ("", 0, []))
            out[index] = (old_text + text, old_n + n, old_lp + (logprobs or []))
    return out


@pytest.mark.parametrize("pace", [False, True])
def test_batches_add_up_to_every_token(pace):
    tokens = 20
    batches = collect(ScriptedEngine(tokens, pace=pace), choices=3, logprobs=1)
    expected_text = "".join(f"<{k}>" for k in range(tokens))
    assert joined(batches) == {i: (expected_text, tokens, [lp(k) for k in range(tokens)]) for i in range(3)}
    for batch in batches:  # one event per choice in a batch
        assert len({e[0] for e in batch}) == len(batch)
    finishes = [e[3] for b in batches for e in b if e[3]]
    assert finishes == ["length"] * 3
    if pace:  # the consumer kept up: about a token per batch
        assert len(batches) >= tokens
    else:  # everything was there at the first wakeup: one batch, one event per choice
        assert len(batches) == 1 and len(batches[0]) == 3


def test_a_failing_choice_raises_after_the_tokens_before_it():
    engine = ScriptedEngine(10, fail_after=4)
    served = ServedModel(MODEL, model=None, engine=engine)

    async def main():
        seen = []
        with pytest.raises(RuntimeError, match="the engine failed"):
            async for batch in stream_choices(served, [1], [SamplingParams(max_tokens=10)]):
                seen += batch
        return seen
    assert "".join(e[1] for e in asyncio.run(main())) == "<0><1><2><3>"


def test_closing_the_stream_closes_every_choice():
    engine = ScriptedEngine(10, hang_after=2)
    batches = collect(engine, choices=2, stop_after=1)
    assert batches and len(engine.closed) == 2  # both requests' generators closed: the engine aborts them


class BurstEngine:
    """The real engine, each request's outputs held back and then handed over at once: the event loop sees
    every token of a request at one wakeup, as when it falls far behind a fast engine."""

    def __init__(self, inner):
        self.inner = inner

    def stats(self):
        return self.inner.stats()

    async def generate(self, prompt_ids, params, request_id=None):
        outputs = [out async for out in self.inner.generate(prompt_ids, params, request_id=request_id)]
        for out in outputs:
            yield out


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    """The same model served twice: through its engine as it is, and through a BurstEngine."""
    model = inference_pio.load(write_chat_checkpoint(tmp_path_factory.mktemp("bursts")), dtype="float32",
                               max_seq_len=256)
    engine = model.async_engine()
    yield (create_app(ServerState(ServedModel(MODEL, model, engine))),
           create_app(ServerState(ServedModel(MODEL, model, BurstEngine(engine)))))
    engine.shutdown()
    model.close()


def post(app, path: str, body: dict) -> httpx.Response:
    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as c:
            return await c.post(path, json=body)
    return asyncio.run(main())


def sse_events(r: httpx.Response) -> list[dict]:
    lines = [line.removeprefix("data: ") for line in r.text.splitlines() if line.startswith("data: ")]
    assert r.status_code == 200 and lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_a_burst_streams_as_one_chat_event_equal_to_the_non_streamed_answer(apps):
    plain, burst = apps
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Say many things"}], "max_tokens": 12,
            "temperature": 0, "ignore_eos": True, "logprobs": True, "top_logprobs": 2}
    whole = post(plain, "/v1/chat/completions", body).json()
    events = sse_events(post(burst, "/v1/chat/completions",
                             {**body, "stream": True, "stream_options": {"include_usage": True}}))
    role, *deltas, usage = events
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len(deltas) == 1  # 12 tokens, one event
    [choice] = deltas[0]["choices"]
    assert choice["delta"].get("content", "") == whole["choices"][0]["message"]["content"]
    assert choice["finish_reason"] == whole["choices"][0]["finish_reason"] == "length"
    streamed, expected = choice["logprobs"]["content"], whole["choices"][0]["logprobs"]["content"]
    assert len(streamed) == usage["usage"]["completion_tokens"] == 12
    # Same tokens; the numbers to float32 rounding (the second request's prompt may come from the prefix cache).
    assert [(e["token"], [t["token"] for t in e["top_logprobs"]]) for e in streamed] == \
        [(e["token"], [t["token"] for t in e["top_logprobs"]]) for e in expected]
    assert [e["logprob"] for e in streamed] == pytest.approx([e["logprob"] for e in expected], abs=1e-5)


def test_a_burst_of_completion_choices_keeps_their_texts_and_offsets_apart(apps):
    plain, burst = apps
    body = {"model": MODEL, "prompt": "Once upon", "max_tokens": 9, "temperature": 1.0, "seed": 5, "n": 3,
            "ignore_eos": True, "logprobs": 2}
    whole = post(plain, "/v1/completions", body).json()["choices"]
    events = sse_events(post(burst, "/v1/completions", {**body, "stream": True}))
    assert len(events) == 3  # one per choice
    streamed = {e["choices"][0]["index"]: e["choices"][0] for e in events}
    for c in whole:
        s = streamed[c["index"]]
        assert (s["text"], s["finish_reason"]) == (c["text"], c["finish_reason"])
        assert s["logprobs"]["tokens"] == c["logprobs"]["tokens"]
        assert s["logprobs"]["text_offset"] == c["logprobs"]["text_offset"]
        assert s["logprobs"]["token_logprobs"] == pytest.approx(c["logprobs"]["token_logprobs"], abs=1e-5)
