"""``POST /v1/chat/completions``: the chat template over the messages, ``n`` choices, optional JSON schema."""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .errors import APIError
from .generation import cancel_on_disconnect, run_choices, sampling_for_choices, stream_choices, token_budget, usage
from .schemas import ChatCompletionRequest
from .sse import event, sse_response
from .structured import processors_for

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatCompletionRequest, request: Request):
    app_state = request.app.state
    served = app_state.pio.generation_model(req.model)
    messages = [{"role": m.role if m.role != "developer" else "system", "content": m.text()} for m in req.messages]
    try:
        # Tokenizing a long conversation takes a while: off the event loop, which serves everyone.
        prompt_ids = await asyncio.to_thread(served.model.apply_chat_template, messages)
    except ValueError as e:
        raise APIError(400, f"messages: {e}", param="messages") from e
    # The first schema of a model builds the grammar's vocabulary (seconds): off the event loop.
    processors = await asyncio.to_thread(processors_for, served.model, req.response_format)
    params = sampling_for_choices(req, token_budget(served, len(prompt_ids), req.token_limit, "messages"), processors)
    cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    metrics = app_state.metrics
    metrics.prompt_tokens.inc(len(prompt_ids))

    def body(obj, choices, extra=None):
        out = {"id": cid, "object": obj, "created": created, "model": served.name, "choices": choices}
        return {**out, **(extra or {})}

    if req.stream:
        async def chunks():
            total = 0
            for i in range(req.n):
                yield event(body("chat.completion.chunk",
                                 [{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
            async for index, text, n, finish in stream_choices(served, prompt_ids, params):
                total += n
                metrics.completion_tokens.inc(n)
                if text or finish:
                    delta = {"content": text} if text else {}
                    yield event(body("chat.completion.chunk", [{"index": index, "delta": delta, "finish_reason": finish}]))
            if req.stream_options and req.stream_options.include_usage:
                yield event(body("chat.completion.chunk", [], {"usage": usage(len(prompt_ids), total)}))
        return sse_response(chunks(), metrics.cancelled.inc)

    gone, choices = await cancel_on_disconnect(request, run_choices(served, prompt_ids, params))
    if gone:
        metrics.cancelled.inc()
        return Response(status_code=499)
    completion_tokens = sum(c.completion_tokens for c in choices)
    metrics.completion_tokens.inc(completion_tokens)
    return body("chat.completion",
                [{"index": c.index, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
                 for c in choices], {"usage": usage(len(prompt_ids), completion_tokens)})
