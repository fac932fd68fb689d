"""``POST /v1/chat/completions``: the chat template over the messages, ``n`` choices, optional JSON schema,
tool calls (:mod:`.tools`) and logprobs (:mod:`.logprobs`)."""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .errors import APIError
from .generation import cancel_on_disconnect, run_choices, sampling_for_choices, stream_choices, token_budget, usage
from .logprobs import chat_logprobs
from .schemas import ChatCompletionRequest
from .sse import ChunkEvents, sse_response
from .structured import constrains, processors_for
from .tool_calls import ToolCallStream, call_objects, parse
from .tools import chat_template_of, render_messages, tool_processors, tool_setup

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatCompletionRequest, request: Request):
    app_state = request.app.state
    served = app_state.pio.generation_model(req.model)
    tools = tool_setup(req, chat_template_of(served.model))
    messages, template_variables = render_messages(req.messages, tools)
    try:
        # Tokenizing a long conversation takes a while: off the event loop, which serves everyone.
        prompt_ids = await asyncio.to_thread(served.model.apply_chat_template, messages, **template_variables)
    except ValueError as e:
        raise APIError(400, f"messages: {e}", param="messages") from e
    budget = token_budget(served, len(prompt_ids), req.token_limit, "messages")
    # The first schema of a model builds the grammar's vocabulary (seconds): off the event loop.
    if tools.active:
        processors = await asyncio.to_thread(tool_processors, served.model, tools, budget)
    elif constrains(req.response_format):
        processors = await asyncio.to_thread(processors_for, served.model, req.response_format)
    else:
        processors = tuple
    params = sampling_for_choices(req, budget, processors, logprobs=(req.top_logprobs or 0) if req.logprobs else None)
    token_text = served.token_text
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    metrics = app_state.metrics
    metrics.prompt_tokens.inc(len(prompt_ids))

    def body(obj, choices, extra=None):
        out = {"id": cid, "object": obj, "created": created, "model": served.name, "choices": choices}
        return {**out, **(extra or {})}

    if req.stream:
        chunk = ChunkEvents({"id": cid, "object": "chat.completion.chunk", "created": created, "model": served.name})

        async def chunks():
            total = 0
            for i in range(req.n):
                yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            calls = [ToolCallStream(tools.fmt) for _ in range(req.n)] if tools.active else None
            async for batch in stream_choices(served, prompt_ids, params):
                events = []
                for index, text, n, finish, logprobs in batch:
                    total += n
                    if calls is None:
                        delta = {"content": text} if text else {}
                    else:
                        delta = calls[index].feed(text, final=finish is not None)
                        finish = "tool_calls" if finish == "stop" and calls[index].called else finish
                    if delta or finish or logprobs:
                        choice = {"index": index, "delta": delta, "finish_reason": finish}
                        if logprobs is not None:
                            choice["logprobs"] = chat_logprobs(logprobs, token_text)
                        events.append(chunk([choice]))
                metrics.completion_tokens.inc(sum(e[2] for e in batch))
                if events:
                    yield "".join(events)  # one write for the whole batch
            if req.stream_options and req.stream_options.include_usage:
                yield chunk([], {"usage": usage(len(prompt_ids), total)})
        return sse_response(chunks(), metrics.cancelled.inc)

    gone, choices = await cancel_on_disconnect(request, run_choices(served, prompt_ids, params))
    if gone:
        metrics.cancelled.inc()
        return Response(status_code=499)
    completion_tokens = sum(c.completion_tokens for c in choices)
    metrics.completion_tokens.inc(completion_tokens)
    return body("chat.completion", [_choice(c, tools, req.logprobs and chat_logprobs(c.logprobs, token_text))
                                    for c in choices], {"usage": usage(len(prompt_ids), completion_tokens)})


def _choice(c, tools, logprobs) -> dict:
    message, finish = {"role": "assistant", "content": c.text}, c.finish_reason
    if tools.active:
        parsed = parse(c.text, tools.fmt)
        if parsed.calls:
            message = {"role": "assistant", "content": parsed.content or None, "tool_calls": call_objects(parsed.calls)}
            finish = "tool_calls" if finish == "stop" else finish
    return {"index": c.index, "message": message, "logprobs": logprobs or None, "finish_reason": finish}
