"""Running one API request's choices on the async engine: limits, sampling, streaming, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from ..engine.sampler import SamplingParams
from .errors import APIError
from .state import ServedModel


# (choice index, new text, new token count, finish reason, the new tokens' TokenLogprobs or None)
Event = tuple[int, str, int, str | None, list | None]


@dataclass
class Choice:
    index: int
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    logprobs: list = field(default_factory=list)  # TokenLogprobs per token, when asked for


def token_budget(served: ServedModel, prompt_tokens: int, requested: int | None, prompt_param: str) -> int:
    """``max_tokens`` checked against the context; None means "up to the end of the context"."""
    limit = served.model.max_model_len
    if prompt_tokens >= limit:
        raise APIError(400, f"the prompt has {prompt_tokens} tokens but {served.name} holds at most {limit} "
                            f"tokens of context (prompt + completion)", param=prompt_param,
                       code="context_length_exceeded")
    if requested is None:
        return limit - prompt_tokens
    if prompt_tokens + requested > limit:
        raise APIError(400, f"{served.name} holds at most {limit} tokens of context, but the request asks for "
                            f"{prompt_tokens + requested} ({prompt_tokens} in the prompt + {requested} max_tokens)",
                       param="max_tokens", code="context_length_exceeded")
    return requested


def sampling_for_choices(req, max_tokens: int, processors: Callable[[], tuple] = tuple,
                         logprobs: int | None = None) -> list[SamplingParams]:
    """One ``SamplingParams`` per choice; with a seed, choice ``i`` uses ``seed + i`` (distinct, reproducible).
    ``logprobs``: None, or how many top log-probabilities each token reports."""
    out = []
    for i in range(req.n):
        try:
            out.append(SamplingParams(
                temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, seed=None if req.seed is None else req.seed + i,
                max_tokens=max_tokens, stop=req.stop_list, repetition_penalty=req.repetition_penalty, ignore_eos=req.ignore_eos,
                logits_processors=processors(), logprobs=logprobs))
        except ValueError as e:
            raise APIError(400, str(e)) from e
    return out


async def _events(served: ServedModel, index: int, prompt_ids: list[int], params: SamplingParams,
                  request_id: str) -> AsyncIterator[Event]:
    """The events of one choice; aborts when closed."""
    gen = served.engine.generate(prompt_ids, params, request_id=request_id)
    async with contextlib.aclosing(gen):
        async for out in gen:
            yield index, out.text or "", len(out.token_ids), out.finish_reason, out.logprobs


async def run_choices(served: ServedModel, prompt_ids: list[int], params: list[SamplingParams]) -> list[Choice]:
    """All choices to completion, concurrently (they batch together in the engine)."""
    async def one(i, p):
        choice, pieces = Choice(i), []
        async for _, text, n, finish, logprobs in _events(served, i, prompt_ids, p, f"{_rid()}-{i}"):
            pieces.append(text)
            choice.completion_tokens += n
            choice.finish_reason = finish or choice.finish_reason
            choice.logprobs += logprobs or ()
        choice.text = "".join(pieces)
        return choice

    return list(await asyncio.gather(*(one(i, p) for i, p in enumerate(params))))


async def stream_choices(served: ServedModel, prompt_ids: list[int],
                         params: list[SamplingParams]) -> AsyncIterator[list[Event]]:
    """Batches of events: what the choices produced since the consumer last asked, one event per choice
    that moved (its texts joined, token counts summed, logprobs concatenated). Closing this cancels every
    choice.

    While the consumer keeps up a batch holds one token; when it falls behind (a fast engine, many streams)
    the tokens of several steps come as one event, so the work per token on the event loop (a JSON chunk,
    a socket write) shrinks as the engine speeds up instead of growing with it.
    """
    pending: list[Event] = []
    ready = asyncio.Event()
    running = len(params)
    failure: list[BaseException] = []

    async def pump(i, p):
        nonlocal running
        try:
            async for event in _events(served, i, prompt_ids, p, f"{_rid()}-{i}"):
                pending.append(event)
                ready.set()
        except Exception as e:  # noqa: BLE001 -- handed to the consumer, which re-raises it
            failure.append(e)
        finally:
            running -= 1
            ready.set()

    tasks = [asyncio.create_task(pump(i, p)) for i, p in enumerate(params)]
    try:
        while pending or running:
            await ready.wait()
            ready.clear()
            batch = pending[:]
            del pending[:]
            if batch:
                yield merge_events(batch)
            if failure:
                raise failure[0]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def merge_events(events: list[Event]) -> list[Event]:
    """One event per choice, in order of first appearance: texts joined, counts summed, the last finish
    reason, logprobs concatenated (None when no event carried any)."""
    if len(events) == 1:
        return events
    merged: dict[int, list] = {}
    for index, text, n, finish, logprobs in events:
        m = merged.get(index)
        if m is None:
            merged[index] = [index, [text], n, finish, None if logprobs is None else list(logprobs)]
            continue
        m[1].append(text)
        m[2] += n
        m[3] = finish or m[3]
        if logprobs is not None:
            m[4] = (m[4] or []) + list(logprobs)
    return [(i, "".join(texts), n, finish, logprobs) for i, texts, n, finish, logprobs in merged.values()]


async def cancel_on_disconnect(request, work) -> tuple[bool, object]:
    """Runs ``work`` (a coroutine) unless the client goes away first: ``(disconnected, result)``.

    The client's leaving is an ``http.disconnect`` on the ASGI receive channel. ``request.is_disconnected()``
    only peeks at that channel (it would have to be polled): wait on the channel instead (once the body
    is read, the next message is the disconnect).
    """
    task = asyncio.ensure_future(work)

    async def watch():
        try:
            while (await request.receive())["type"] != "http.disconnect":
                pass
        except Exception:  # noqa: BLE001 -- no channel to watch: the work runs to its end
            await asyncio.get_running_loop().create_future()

    watcher = asyncio.ensure_future(watch())
    try:
        finished, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server is cancelling this request: its work goes too
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in finished:
        return False, task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return True, None


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _rid() -> str:
    return uuid.uuid4().hex[:12]
