"""Incremental detokenization: text pieces as tokens arrive, UTF-8 safe.

Decoding one token at a time is wrong twice over: a byte-level BPE token may hold only part of a
multi-byte character (decoding it alone yields U+FFFD), and SentencePiece-style decoders strip the
leading space of the first token they see. The "prefix offset / read offset" scheme (TGI, vLLM)
avoids both: decode a short window that starts a few tokens back (``prefix_offset``), subtract the
text of the part already emitted (``prefix_offset .. read_offset``), and emit the difference only
when it does not end in U+FFFD (an incomplete character). Work per token is two decodes of a window
of a few tokens, whatever the length of the text.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

# How many prompt tokens of context the first window starts with, as in vLLM: enough for decoders
# whose output for a token depends on its neighbours (leading-space handling, byte fallback).
PROMPT_CONTEXT_TOKENS = 5

_REPLACEMENT = "\ufffd"


class Decoder(Protocol):
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    """Turns a stream of token ids into text pieces.

    ``prompt_ids`` give context only (their text is never emitted). The concatenation of every
    :meth:`add` result plus :meth:`flush` equals the text the generated tokens add after the prompt:
    ``decode(output_ids)`` with no prompt; with a prompt, the same up to the decoder's handling of
    the first generated token (a SentencePiece leading space is kept, as it should be mid-text).
    """

    def __init__(self, tokenizer: Decoder, prompt_ids: Sequence[int] = (), skip_special_tokens: bool = True):
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = list(prompt_ids)
        self._read = len(self._ids)
        self._prefix = max(0, self._read - PROMPT_CONTEXT_TOKENS)
        self._prefix_text = self._decode(self._prefix, self._read)
        self.num_prompt_tokens = self._read

    @property
    def token_ids(self) -> list[int]:
        """Prompt and generated ids so far (the live list: do not modify)."""
        return self._ids

    def add(self, token_id: int) -> str:
        """Appends one token; returns the text that became final ("" while a character is incomplete)."""
        self._ids.append(token_id)
        return self._advance(final=False)

    def add_many(self, token_ids: Iterable[int]) -> Iterator[str]:
        """Yields the non-empty pieces produced by appending each of ``token_ids``."""
        for t in token_ids:
            piece = self.add(t)
            if piece:
                yield piece

    def flush(self) -> str:
        """Text still held back (an incomplete character decodes to U+FFFD here, as a full decode would)."""
        return self._advance(final=True)

    def _advance(self, final: bool) -> str:
        text = self._decode(self._prefix, len(self._ids))
        if len(text) <= len(self._prefix_text) or (text.endswith(_REPLACEMENT) and not final):
            # Nothing new, or the last character is still incomplete: wait for more bytes.
            return ""
        piece = text[len(self._prefix_text) :]
        self._prefix, self._read = self._read, len(self._ids)
        self._prefix_text = self._decode(self._prefix, self._read)
        return piece

    def _decode(self, start: int, end: int) -> str:
        if start >= end:
            return ""
        return self._tokenizer.decode(self._ids[start:end], skip_special_tokens=self._skip)
