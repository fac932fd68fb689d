"""Sentence embeddings from a causal LM without an embedding head: mean-pooled, L2-normalized final hidden states.

The final hidden states are read with a forward hook on the decoder's last norm (``engine.model.norm``,
present in every Llama-shaped plugin): its output ``[T, hidden]`` is exactly what the LM head reads.
Texts are packed into one forward per batch through the paged KV cache, as a prefill, under the
engine's lock (generation pauses meanwhile; the blocks are freed before the lock is released).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..engine.kv_cache import KVCacheFullError


def mean_pooled_embeddings(model, texts: Sequence[str]) -> torch.Tensor:
    """``[len(texts), hidden]`` float32, each row of unit length, for a loaded ``inference_pio.Model``.

    Texts longer than the model's context are truncated to it; an empty text embeds its special tokens
    (or the EOS token when the tokenizer adds none).
    """
    engine = model.engine
    net = engine.model
    norm = getattr(net, "norm", None)
    if not isinstance(norm, torch.nn.Module):
        raise ValueError(f"{type(net).__name__} has no final 'norm' module to read hidden states from; "
                         "this model cannot give pooled embeddings")
    limit = engine.max_model_len
    eos = list(getattr(engine, "eos_token_ids", ()))[:1]
    token_lists = []
    for text in texts:
        ids = model.tokenize(text)[:limit] or eos
        if not ids:
            raise ValueError(f"text {text!r} has no tokens and the model has no EOS token to stand in")
        token_lists.append(ids)
    out = torch.empty(len(token_lists), net.config.hidden_size, dtype=torch.float32)
    captured: list[torch.Tensor] = []
    handle = norm.register_forward_hook(lambda _m, _args, output: captured.append(output.float().clone()))
    try:
        with engine.lock:
            start = 0
            while start < len(token_lists):
                end = _forward_batch(engine, net, token_lists, start)
                hidden = captured.pop()
                lens = [len(ids) for ids in token_lists[start:end]]
                for row, chunk in zip(range(start, end), hidden.split(lens)):
                    out[row] = chunk.mean(dim=0).cpu()
                start = end
    finally:
        handle.remove()
    return torch.nn.functional.normalize(out, dim=-1)


def _forward_batch(engine, net, token_lists: list[list[int]], start: int) -> int:
    """Runs the texts from ``start`` on as one prefill, as many as the free KV blocks hold; returns the end."""
    cache = engine.kv_cache
    seqs: list[object] = []
    try:
        end = start
        while end < len(token_lists):
            seq = object()
            try:
                cache.allocate(seq, len(token_lists[end]))
            except KVCacheFullError:
                if not seqs:
                    raise
                break
            seqs.append(seq)
            end += 1
        lens = [len(ids) for ids in token_lists[start:end]]
        meta = cache.build_metadata(seqs, lens)
        device = cache.device
        ids = torch.tensor([t for ids in token_lists[start:end] for t in ids], dtype=torch.int64, device=device)
        positions = torch.cat([torch.arange(n, dtype=torch.int64) for n in lens]).to(device)
        net(ids, positions, meta, cache.key_caches, cache.value_caches)
        return end
    finally:
        for seq in seqs:
            cache.free(seq)


__all__ = ["mean_pooled_embeddings"]
