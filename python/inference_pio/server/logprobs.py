"""The engine's per-token log-probabilities in OpenAI's two shapes.

Chat: ``choices[].logprobs.content[]`` = ``{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}``.
Completions: ``choices[].logprobs`` = ``{tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}``.

A token's text is its own decoding (special tokens included), so a token holding part of a UTF-8
character shows U+FFFD; ``bytes`` are that text's UTF-8 bytes. Every generated token is listed, the
end-of-sequence token included. Which distribution the numbers come from:
:func:`inference_pio.engine.sampler.token_logprobs`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..engine.sampler import TokenLogprobs


class TokenText:
    """Decodes single token ids, with a cache (the same few thousand ids come back all the time)."""

    def __init__(self, detokenize: Callable[..., str]):
        self._detokenize = detokenize
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._cache.get(token_id)
        if text is None:
            text = self._cache[token_id] = self._detokenize([token_id], skip_special_tokens=False)
        return text


def _entry(text: str, logprob: float) -> dict:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


def chat_logprobs(entries: Sequence[TokenLogprobs], text: TokenText) -> dict:
    """``choices[].logprobs`` of a chat completion (or of one streamed chunk)."""
    return {"content": [{**_entry(text(e.token_id), e.logprob),
                         "top_logprobs": [_entry(text(t), lp) for t, lp in e.top]} for e in entries]}


def completion_logprobs(entries: Sequence[TokenLogprobs], text: TokenText, offset: int) -> dict:
    """``choices[].logprobs`` of a completion (or one streamed chunk); ``offset``: where the first token's
    text starts in the choice's text (after an echoed prompt, or after the earlier chunks)."""
    tokens = [text(e.token_id) for e in entries]
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t)
    return {"tokens": tokens, "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [_by_text(e.top, text) for e in entries], "text_offset": offsets}


def _by_text(top, text: TokenText) -> dict[str, float]:
    """``{token text: logprob}``, best first; tokens whose texts coincide (two partial characters) keep the best."""
    out: dict[str, float] = {}
    for token_id, logprob in top:
        out.setdefault(text(token_id), logprob)
    return out
