"""``POST /v1/embeddings``: vectors from the server's embedding model (run off the event loop)."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
from fastapi import APIRouter, Request

from .errors import APIError
from .schemas import EmbeddingRequest

router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(req: EmbeddingRequest, request: Request):
    served = request.app.state.pio.embedding_model(req.model)
    texts = req.texts
    if any(not t for t in texts):
        raise APIError(400, "input strings must not be empty", param="input")
    lock: asyncio.Lock = request.app.state.embed_lock
    async with lock:  # one embedding batch at a time on the model (its buffers are shared)
        vectors = await asyncio.to_thread(served.model.embed, texts)
        tokens = await asyncio.to_thread(lambda: sum(len(served.model.tokenize(t)) for t in texts))
    if req.dimensions is not None:
        if not 1 <= req.dimensions <= vectors.shape[1]:
            raise APIError(400, f"dimensions must be in [1, {vectors.shape[1]}]", param="dimensions")
        vectors = vectors[:, : req.dimensions]
        vectors = vectors / vectors.norm(dim=1, keepdim=True).clamp_min(1e-12)
    array = vectors.float().cpu().numpy()
    data = []
    for i, row in enumerate(array):
        value = base64.b64encode(np.ascontiguousarray(row, dtype="<f4").tobytes()).decode() \
            if req.encoding_format == "base64" else row.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": served.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
