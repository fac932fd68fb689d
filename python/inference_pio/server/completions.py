"""``POST /v1/completions``: text completion of one prompt (text or token ids), ``n`` choices."""

from __future__ import annotations

import asyncio
import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from .errors import APIError
from .generation import cancel_on_disconnect, run_choices, sampling_for_choices, stream_choices, token_budget, usage
from .logprobs import completion_logprobs
from .schemas import CompletionRequest
from .sse import ChunkEvents, sse_response

router = APIRouter()


def _prompt_ids(served, prompt) -> list[int]:
    if isinstance(prompt, str):
        return served.model.tokenize(prompt)
    if prompt and isinstance(prompt[0], int):
        vocab = served.model.vocab_size
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise APIError(400, f"prompt token ids must be in [0, {vocab}), got {bad[:5]}", param="prompt")
        return list(prompt)
    raise APIError(400, "one prompt per request is supported (a string or a list of token ids)", param="prompt")


@router.post("/v1/completions")
async def completions(req: CompletionRequest, request: Request):
    app_state = request.app.state
    served = app_state.pio.generation_model(req.model)
    prompt_ids = await asyncio.to_thread(_prompt_ids, served, req.prompt)  # a long prompt: off the event loop
    if not prompt_ids:
        raise APIError(400, "the prompt is empty", param="prompt")
    if req.echo and req.logprobs is not None:
        raise APIError(400, "logprobs with echo (the prompt's logprobs) is not supported", param="logprobs")
    params = sampling_for_choices(req, token_budget(served, len(prompt_ids), req.max_tokens, "prompt"),
                                  logprobs=req.logprobs)
    token_text = served.token_text
    cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    metrics = app_state.metrics
    metrics.prompt_tokens.inc(len(prompt_ids))
    echo = (req.prompt if isinstance(req.prompt, str) else served.model.detokenize(prompt_ids)) if req.echo else ""

    def body(choices, usage=None):
        out = {"id": cid, "object": "text_completion", "created": created, "model": served.name, "choices": choices}
        if usage is not None:
            out["usage"] = usage
        return out

    if req.stream:
        chunk = ChunkEvents({"id": cid, "object": "text_completion", "created": created, "model": served.name})

        async def chunks():
            total = 0
            if echo:
                for i in range(req.n):
                    yield chunk([{"index": i, "text": echo, "finish_reason": None, "logprobs": None}])
            offsets = [0] * req.n
            async for batch in stream_choices(served, prompt_ids, params):
                events = []
                for index, text, n, finish, logprobs in batch:
                    total += n
                    if text or finish or logprobs:
                        lp = None if logprobs is None else completion_logprobs(logprobs, token_text, offsets[index])
                        if lp is not None and lp["tokens"]:
                            offsets[index] = lp["text_offset"][-1] + len(lp["tokens"][-1])
                        events.append(chunk([{"index": index, "text": text, "finish_reason": finish, "logprobs": lp}]))
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
    return body([{"index": c.index, "text": echo + c.text, "finish_reason": c.finish_reason,
                  "logprobs": None if req.logprobs is None else completion_logprobs(c.logprobs, token_text, 0)}
                 for c in choices], usage(len(prompt_ids), completion_tokens))
