"""A minimal OpenAI-compatible server on loopback whose answers a test scripts: ok, HTTP 500, slow, hanging.

It runs uvicorn in a thread of the test process. ``answer`` is the JSON the chat route returns as the
message content; ``faults`` is a queue of faults for the next requests (then ``mode`` applies).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.server.serving import free_port


class FaultServer:
    def __init__(self):
        self.mode = "ok"            # "ok" | "500" | "slow" | "hang"
        self.faults: deque[str] = deque()
        self.slow_seconds = 0.3
        self.answer: object = {}
        self.chat_requests = 0
        self.last_request: dict | None = None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            self.chat_requests += 1
            self.last_request = await request.json()
            mode = self.faults.popleft() if self.faults else self.mode
            if mode == "500":
                return JSONResponse({"error": {"message": "injected failure", "type": "server_error"}}, status_code=500)
            if mode == "hang":
                await asyncio.sleep(3600)
            if mode == "slow":
                await asyncio.sleep(self.slow_seconds)
            return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": self.last_request["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": json.dumps(self.answer)}}],
                    "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}}

        @app.post("/v1/embeddings")
        async def embeddings(request: Request):
            body = await request.json()
            texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, 0.0]} for i, t in enumerate(texts)]
            return {"object": "list", "data": data[::-1], "model": body["model"],  # out of order on purpose
                    "usage": {"prompt_tokens": 1, "total_tokens": 1}}

        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error",
                                                     lifespan="off", timeout_graceful_shutdown=1))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> "FaultServer":
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fault server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
